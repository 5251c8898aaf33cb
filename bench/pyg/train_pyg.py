"""Reference implementation of the benchmark model in PyTorch Geometric, for `make bench-pyg` (CPU)
and `scripts/gpu-run.sh pyg` (GPU, --device cuda).

The same task as `shardsage train` with its defaults (OGB's reference GraphSAGE for
ogbl-citation2): 3 SAGEConv layers (mean aggregation), hidden 256, ReLU between layers, no
dropout; a 3-layer MLP link predictor on the element-wise product of the two endpoint
embeddings; binary cross-entropy with logits averaged over the positives and their negatives;
one uniform random negative target per positive; Adam with lr 0.0005; batches of 512 positive
training edges; fan-outs 15,10,5 (seeds' hop first).

It reads the SAME dataset file (HDF5, see DESIGN.md) as shardsage: the message-passing CSR
(/csr/indptr, /csr/indices, training edges only), the input features (/node/features), the
training edges (/edges/train) and the held-out edges with their fixed negatives (/edges/valid,
/edges/valid_neg), so the split and the evaluation task are identical.

PyG's own neighbour loaders need pyg-lib or torch-sparse (not on PyPI), so the uniform sampler is
written here with numpy: per node, all neighbours when its degree is at most the fan-out, else
the fan-out many chosen without replacement. Each layer runs on the bipartite block of the nodes
the next layer needs (destination nodes are the prefix of the source nodes), as PyG's
NeighborSampler examples do.

Evaluation follows OGB: layer-wise inference over all nodes with every neighbour, then for each
held-out edge the rank of the positive among its negatives (optimistic and pessimistic ranks
averaged); MRR is the mean reciprocal rank.

With --device cuda the features, the model and the evaluation run on the GPU (features are
gathered there per step); the sampler stays on the host, as above. Each step's time runs from
sampling to the optimiser step: reading the loss back waits for the GPU.

Prints and writes (--out) a JSON object with per-epoch training times (and each step's), and the MRR.
"""

import argparse
import json
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import SAGEConv


class Sage(torch.nn.Module):
    def __init__(self, in_dim, hidden, layers):
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        self.convs = torch.nn.ModuleList(
            SAGEConv(dims[i], dims[i + 1], aggr="mean") for i in range(layers)
        )

    def forward(self, x, blocks):
        """blocks: input layer first; each (edge_index, n_src, n_dst)."""
        for i, (edge_index, n_src, n_dst) in enumerate(blocks):
            x = self.convs[i]((x, x[:n_dst]), edge_index, size=(n_src, n_dst))
            if i + 1 < len(self.convs):
                x = F.relu(x)
        return x


class LinkPredictor(torch.nn.Module):
    def __init__(self, hidden, layers):
        super().__init__()
        self.lins = torch.nn.ModuleList(
            torch.nn.Linear(hidden, hidden if i + 1 < layers else 1) for i in range(layers)
        )

    def forward(self, a, b):
        x = a * b
        for lin in self.lins[:-1]:
            x = F.relu(lin(x))
        return self.lins[-1](x).squeeze(-1)


class UniformSampler:
    """Uniform neighbour sampling into bipartite blocks over a CSR (numpy)."""

    def __init__(self, indptr, indices, num_nodes, rng):
        self.indptr = indptr
        self.indices = indices
        self.deg = np.diff(indptr)
        self.rng = rng
        self.pos = np.full(num_nodes, -1, dtype=np.int64)

    def sample_hop(self, frontier, fanout):
        deg = self.deg[frontier]
        take = deg if fanout < 0 else np.minimum(deg, fanout)
        # Nodes that keep every neighbour.
        full = take == deg
        starts = self.indptr[frontier]
        # All neighbours of fully kept nodes, in CSR order.
        f_nodes = np.nonzero(full)[0]
        f_counts = deg[f_nodes]
        f_dst = np.repeat(f_nodes, f_counts)
        f_off = np.arange(f_counts.sum()) - np.repeat(np.cumsum(f_counts) - f_counts, f_counts)
        f_src = self.indices[np.repeat(starts[f_nodes], f_counts) + f_off]
        # The others: a random key per neighbour, keep the `fanout` smallest keys per node.
        p_nodes = np.nonzero(~full)[0]
        if len(p_nodes):
            p_deg = deg[p_nodes]
            seg = np.repeat(np.arange(len(p_nodes)), p_deg)
            off = np.arange(p_deg.sum()) - np.repeat(np.cumsum(p_deg) - p_deg, p_deg)
            keys = self.rng.random(len(seg))
            order = np.lexsort((keys, seg))
            rank = np.empty_like(order)
            rank[order] = off  # position of each neighbour in its node's random order
            keep = rank < fanout
            p_dst = p_nodes[seg[keep]]
            p_src = self.indices[np.repeat(self.indptr[frontier[p_nodes]], p_deg)[keep] + off[keep]]
            dst = np.concatenate([f_dst, p_dst])
            src = np.concatenate([f_src, p_src])
        else:
            dst, src = f_dst, f_src
        return dst, src.astype(np.int64)

    def sample(self, seeds, fanouts):
        """Returns the input nodes (global ids) and the blocks, input layer first."""
        frontier = seeds
        self.pos[frontier] = np.arange(len(frontier))
        blocks = []
        for fanout in fanouts:
            dst, src = self.sample_hop(frontier, fanout)
            new = src[self.pos[src] < 0]
            new = np.unique(new)
            n_dst = len(frontier)
            self.pos[new] = n_dst + np.arange(len(new))
            frontier = np.concatenate([frontier, new])
            edge_index = torch.from_numpy(np.stack([self.pos[src], dst]))
            blocks.append((edge_index, len(frontier), n_dst))
        self.pos[frontier] = -1
        blocks.reverse()
        return frontier, blocks


@torch.no_grad()
def full_inference(model, x, indptr, indices, chunk=16384):
    """Layer-wise inference over all nodes with every neighbour (in destination chunks)."""
    n = x.shape[0]
    deg = np.diff(indptr)
    for i, conv in enumerate(model.convs):
        out = []
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            cnt = deg[s:e]
            dst = np.repeat(np.arange(e - s), cnt)
            src = indices[indptr[s] : indptr[e]].astype(np.int64)
            ei = torch.from_numpy(np.stack([src, dst])).to(x.device)
            h = conv((x, x[s:e]), ei, size=(n, e - s))
            if i + 1 < len(model.convs):
                h = F.relu(h)
            out.append(h)
        x = torch.cat(out)
    return x


@torch.no_grad()
def mrr(predictor, h, pos, neg, batch=64):
    """OGB MRR: rank = 1 + (#neg > pos + #neg >= pos) / 2."""
    rr = []
    for s in range(0, len(pos), batch):
        p = pos[s : s + batch]
        n = neg[s : s + batch]
        hs = h[p[:, 0]]
        ps = predictor(hs, h[p[:, 1]])
        k = n.shape[1]
        ns = predictor(hs.unsqueeze(1).expand(-1, k, -1).reshape(-1, hs.shape[1]), h[n.reshape(-1)])
        ns = ns.view(-1, k)
        opt = (ns > ps.unsqueeze(1)).sum(1).double()
        pes = (ns >= ps.unsqueeze(1)).sum(1).double()
        rr.append(1.0 / (1.0 + (opt + pes) / 2.0))
    return torch.cat(rr).mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps-per-epoch", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=0.0005)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--predictor-layers", type=int, default=3)
    ap.add_argument("--fanouts", default="15,10,5")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out")
    a = ap.parse_args()

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train_pyg.py: --device cuda, but torch sees no CUDA device")
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t_load = time.time()
    with h5py.File(a.dataset, "r") as f:
        num_nodes = int(f.attrs["num_nodes"])
        indptr = f["csr/indptr"][:].astype(np.int64)
        indices = f["csr/indices"][:].astype(np.int64)
        x = torch.from_numpy(f["node/features"][:].astype(np.float32))
        train = f["edges/train"][:].astype(np.int64)
        valid = torch.from_numpy(f["edges/valid"][:].astype(np.int64))
        valid_neg = torch.from_numpy(f["edges/valid_neg"][:].astype(np.int64))
    x = x.to(dev)
    valid, valid_neg = valid.to(dev), valid_neg.to(dev)
    load_s = time.time() - t_load
    fanouts = [int(v) for v in a.fanouts.split(",")]

    model = Sage(x.shape[1], a.hidden, a.layers).to(dev)
    predictor = LinkPredictor(a.hidden, a.predictor_layers).to(dev)
    opt = torch.optim.Adam(list(model.parameters()) + list(predictor.parameters()), lr=a.lr)
    sampler = UniformSampler(indptr, indices, num_nodes, rng)
    steps_full = (len(train) + a.batch_size - 1) // a.batch_size
    steps = min(steps_full, a.steps_per_epoch) if a.steps_per_epoch > 0 else steps_full

    epochs = []
    evals = []
    for epoch in range(a.epochs):
        model.train()
        predictor.train()
        perm = rng.permutation(len(train))
        t_sample = t_compute = 0.0
        losses = []
        step_s = []
        sample_step_s = []
        t0 = time.time()
        for step in range(steps):
            ts = time.time()
            idx = perm[(step * a.batch_size) % len(train) :][: a.batch_size]
            edges = train[idx]
            neg = rng.integers(0, num_nodes, size=len(edges))
            endpoints = np.concatenate([edges[:, 0], edges[:, 1], neg])
            seeds, at = np.unique(endpoints, return_inverse=True)
            input_nodes, blocks = sampler.sample(seeds, fanouts)
            t_sample += time.time() - ts
            sample_step_s.append(time.time() - ts)
            tc = time.time()
            blocks = [(ei.to(dev), n_src, n_dst) for ei, n_src, n_dst in blocks]
            h = model(x[torch.from_numpy(input_nodes).to(dev)], blocks)
            at = torch.from_numpy(at).to(dev)
            m = len(edges)
            src, dst, ng = at[:m], at[m : 2 * m], at[2 * m :]
            logits = predictor(h[torch.cat([src, src])], h[torch.cat([dst, ng])])
            labels = torch.cat([torch.ones(m, device=dev), torch.zeros(m, device=dev)])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            t_compute += time.time() - tc
            step_s.append(time.time() - ts)
        train_s = time.time() - t0
        epochs.append(
            {
                "epoch": epoch + 1,
                "steps": steps,
                "train_s": train_s,
                "sample_s": t_sample,
                "compute_s": t_compute,
                "positive_edges_per_s": steps * a.batch_size / train_s,
                "loss_last": losses[-1],
                "loss_mean": float(np.mean(losses)),
                "step_s": step_s,
                "sample_step_s": sample_step_s,
            }
        )
        print(json.dumps({k: v for k, v in epochs[-1].items() if not k.endswith("step_s")}), flush=True)
        last = epoch + 1 == a.epochs
        if last or (a.eval_every > 0 and (epoch + 1) % a.eval_every == 0):
            model.eval()
            predictor.eval()
            te = time.time()
            h = full_inference(model, x, indptr, indices)
            v = mrr(predictor, h, valid, valid_neg)
            evals.append({"epoch": epoch + 1, "split": "valid", "mrr": v, "eval_s": time.time() - te})
            print(json.dumps(evals[-1]), flush=True)

    result = {
        "implementation": "pyg",
        "torch": torch.__version__,
        "torch_geometric": __import__("torch_geometric").__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dataset": a.dataset,
        "num_nodes": num_nodes,
        "train_edges": int(len(train)),
        "valid_edges": int(len(valid)),
        "num_neg": int(valid_neg.shape[1]),
        "load_s": load_s,
        "epochs": epochs,
        "evals": evals,
        "params": sum(p.numel() for p in model.parameters())
        + sum(p.numel() for p in predictor.parameters()),
    }
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("threads", "params", "num_nodes", "load_s")}))


if __name__ == "__main__":
    main()
