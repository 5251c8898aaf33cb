"""PyTorch Geometric runs of the benchmark model, for `make bench-pyg` (CPU) and
`scripts/gpu-run.sh pyg` (GPU, --device cuda).

The same task as `shardsage train` (OGB's reference GraphSAGE for ogbl-citation2): 3 SAGEConv
layers (mean aggregation), hidden 256, ReLU between layers, no dropout; a 3-layer MLP link
predictor on the element-wise product of the two endpoint embeddings; binary cross-entropy with
logits averaged over the positives and their negatives; one random negative per positive; Adam
with lr 0.0005; fan-outs 15,10,5 (seeds' hop first).

`--loader` picks how batches are sampled and run:
- `link-neighbor` (PyG's default path): `torch_geometric.loader.LinkNeighborLoader` over the
  message-passing graph with `neg_sampling_ratio=1.0` (PyG's "binary" negatives: random source
  and random target), and `torch_geometric.nn.GraphSAGE` run on the whole sampled subgraph at
  every layer. Each node's neighbours are sampled once, when it is first reached.
- `link-neighbor-trim` (PyG's fastest CPU path): the same loader and model, with
  `num_sampled_nodes_per_hop` / `num_sampled_edges_per_hop` so that every layer runs only on the
  nodes and edges the next layer needs (PyG's `trim_to_layer`; the same outputs for the seeds).
- `per-layer`: a numpy sampler of this file that draws fresh neighbours for every destination at
  every hop (DGL's block rule, and shardsage's `--sampling per-layer`), negatives as OGB's
  reference (the source kept, a random target), each layer on its bipartite block.

It reads the SAME dataset file (HDF5, see DESIGN.md) as shardsage: the message-passing CSR
(/csr/indptr, /csr/indices, training edges only), the input features (/node/features), the
training edges (/edges/train) and the held-out edges with their fixed negatives (/edges/valid,
/edges/valid_neg, /edges/test, /edges/test_neg), so the split and the evaluation task are
identical.

Evaluation follows OGB: layer-wise inference over all nodes with every neighbour, then for each
held-out edge the rank of the positive among its negatives (optimistic and pessimistic ranks
averaged); MRR is the mean reciprocal rank. `--eval-every N` evaluates valid (and test with
`--eval-test`) every N epochs; the last epoch is always evaluated.

With --device cuda the features, the model and the evaluation run on the GPU; the samplers stay on
the host. Each step's time runs from sampling to the optimiser step: reading the loss back waits
for the GPU.

Prints and writes (--out) a JSON object with per-epoch training times (and each step's, with its
sampling share), and the MRRs.
"""

import argparse
import json
import os
import sys
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


def hop_counts(batch, num_hops):
    """Per-hop node and edge counts of a sampled subgraph, with its edges ordered by hop, as
    `trim_to_layer` needs them. pyg-lib's sampler reports them; torch-sparse's does not, but it
    numbers nodes in discovery order (seeds, then each hop's new nodes) and samples hop by hop,
    so a hop's edges are those whose destination is a node the previous hop discovered."""
    nodes = getattr(batch, "num_sampled_nodes", None)
    edges = getattr(batch, "num_sampled_edges", None)
    if nodes is not None and edges is not None:
        return list(nodes), list(edges), batch.edge_index
    src, dst = batch.edge_index
    start, end = 0, int(batch.edge_label_index.unique().numel())
    hop_of_edge = torch.full_like(dst, -1)
    nodes = [end]
    edges = []
    for hop in range(num_hops):
        in_hop = (dst >= start) & (dst < end)
        hop_of_edge[in_hop] = hop
        edges.append(int(in_hop.sum()))
        new_end = max(end, int(src[in_hop].max()) + 1) if edges[-1] else end
        nodes.append(new_end - end)
        start, end = end, new_end
    if bool((hop_of_edge < 0).any()) or end != batch.num_nodes:
        raise SystemExit("train_pyg.py: the sampled subgraph is not in hop order; cannot trim")
    order = torch.sort(hop_of_edge, stable=True).indices
    return nodes, edges, batch.edge_index[:, order]


class PerLayerBatches:
    """Batches of the `per-layer` loader: (input node ids, blocks, pair positions, m)."""

    def __init__(self, train, num_nodes, sampler, fanouts, batch_size, steps, rng):
        self.train, self.num_nodes, self.sampler = train, num_nodes, sampler
        self.fanouts, self.batch_size, self.steps, self.rng = fanouts, batch_size, steps, rng

    def __iter__(self):
        perm = self.rng.permutation(len(self.train))
        for step in range(self.steps):
            idx = perm[(step * self.batch_size) % len(self.train) :][: self.batch_size]
            edges = self.train[idx]
            neg = self.rng.integers(0, self.num_nodes, size=len(edges))
            endpoints = np.concatenate([edges[:, 0], edges[:, 1], neg])
            seeds, at = np.unique(endpoints, return_inverse=True)
            input_nodes, blocks = self.sampler.sample(seeds, self.fanouts)
            m = len(edges)
            at = torch.from_numpy(at)
            src = torch.cat([at[:m], at[:m]])
            dst = torch.cat([at[m : 2 * m], at[2 * m :]])
            yield input_nodes, blocks, src, dst, m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument(
        "--loader", choices=["link-neighbor", "link-neighbor-trim", "per-layer"], default="link-neighbor"
    )
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps-per-epoch", type=int, default=0, help="cap on steps per epoch (0 = a full pass)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=0.0005)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--predictor-layers", type=int, default=3)
    ap.add_argument("--fanouts", default="15,10,5")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--eval-test", action="store_true", help="also score the test split at each evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out")
    ap.add_argument(
        "--checkpoint",
        help="save the run here every --checkpoint-every-s seconds and resume from it when it "
        "exists (for epochs longer than a session; PyG loaders only). Each epoch's edge order is "
        "then an explicit random permutation fed to the same loader without shuffle.",
    )
    ap.add_argument("--checkpoint-every-s", type=float, default=600.0)
    a = ap.parse_args()
    if a.checkpoint and a.loader == "per-layer":
        raise SystemExit("train_pyg.py: --checkpoint is for the PyG loaders")

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
        held_out = {}
        for split in ("valid", "test"):
            if f"edges/{split}" in f:
                held_out[split] = (
                    torch.from_numpy(f[f"edges/{split}"][:].astype(np.int64)).to(dev),
                    torch.from_numpy(f[f"edges/{split}_neg"][:].astype(np.int64)).to(dev),
                )
    x_host = x
    x = x.to(dev)
    load_s = time.time() - t_load
    fanouts = [int(v) for v in a.fanouts.split(",")]
    steps_full = (len(train) + a.batch_size - 1) // a.batch_size
    steps = min(steps_full, a.steps_per_epoch) if a.steps_per_epoch > 0 else steps_full

    if a.loader == "per-layer":
        model = Sage(x.shape[1], a.hidden, a.layers).to(dev)
    else:
        from torch_geometric.data import Data
        from torch_geometric.loader import LinkNeighborLoader
        from torch_geometric.nn import GraphSAGE

        model = GraphSAGE(x.shape[1], a.hidden, num_layers=a.layers, aggr="mean").to(dev)
        # The message-passing graph as an edge list (source -> destination), from the CSR rows
        # (row = destination, as shardsage aggregates over a node's CSR neighbours).
        dst_of = np.repeat(np.arange(num_nodes), np.diff(indptr))
        edge_index = torch.from_numpy(np.stack([indices, dst_of]))
        data = Data(x=x_host, edge_index=edge_index, num_nodes=num_nodes)
        label_index = torch.from_numpy(train.T.copy())

        def make_loader(edge_label_index, shuffle):
            return LinkNeighborLoader(
                data,
                num_neighbors=fanouts,
                edge_label_index=edge_label_index,
                neg_sampling_ratio=1.0,
                batch_size=a.batch_size,
                shuffle=shuffle,
            )

        loader = make_loader(label_index, True)
    predictor = LinkPredictor(a.hidden, a.predictor_layers).to(dev)
    opt = torch.optim.Adam(list(model.parameters()) + list(predictor.parameters()), lr=a.lr)
    sampler = UniformSampler(indptr, indices, num_nodes, rng)
    trim = a.loader == "link-neighbor-trim"
    checked_trim = []

    def batches(epoch, first_step):
        """Yields (h of the batch's nodes, src positions, dst positions, labels) per step."""
        if a.checkpoint:
            # The epoch's order, reproducible on resume: the same loader over the permuted
            # edges from the first step not yet done, without its own shuffle.
            gen = torch.Generator().manual_seed(a.seed * 1_000_003 + epoch)
            perm = torch.randperm(label_index.shape[1], generator=gen)
            rest = perm[first_step * a.batch_size : steps * a.batch_size]
            for batch in make_loader(label_index[:, rest], False):
                yield ("pyg", batch)
        elif a.loader == "per-layer":
            for input_nodes, blocks, src, dst, m in PerLayerBatches(
                train, num_nodes, sampler, fanouts, a.batch_size, steps, rng
            ):
                yield ("per-layer", input_nodes, blocks, src, dst, m)
        else:
            for i, batch in enumerate(loader):
                if i >= steps:
                    break
                yield ("pyg", batch)

    def forward(item):
        if item[0] == "per-layer":
            _, input_nodes, blocks, src, dst, m = item
            blocks = [(ei.to(dev), n_src, n_dst) for ei, n_src, n_dst in blocks]
            h = model(x[torch.from_numpy(input_nodes).to(dev)], blocks)
            labels = torch.cat([torch.ones(m, device=dev), torch.zeros(m, device=dev)])
            return predictor(h[src.to(dev)], h[dst.to(dev)]), labels, m
        batch = item[1]
        edge_index, kw = batch.edge_index, {}
        if trim:
            nodes, edges, edge_index = hop_counts(batch, len(fanouts))
            kw = dict(num_sampled_nodes_per_hop=nodes, num_sampled_edges_per_hop=edges)
            if not checked_trim:
                # Trimming must not change the seeds' embeddings: checked once per run.
                with torch.no_grad():
                    full = model(batch.x.to(dev), batch.edge_index.to(dev))[: nodes[0]]
                    trimmed = model(batch.x.to(dev), edge_index.to(dev), **kw)[: nodes[0]]
                if not torch.allclose(full, trimmed, atol=1e-5, rtol=1e-4):
                    raise SystemExit("train_pyg.py: trimmed layers changed the seeds' embeddings")
                checked_trim.append(True)
        h = model(batch.x.to(dev), edge_index.to(dev), **kw)
        eli = batch.edge_label_index.to(dev)
        labels = batch.edge_label.to(dev).float()
        return predictor(h[eli[0]], h[eli[1]]), labels, int(labels.sum().item())

    epochs = []
    evals = []
    state = None
    if a.checkpoint and os.path.exists(a.checkpoint):
        state = torch.load(a.checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        predictor.load_state_dict(state["predictor"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        epochs, evals = state["epochs"], state["evals"]
        print(f"resumed from {a.checkpoint}: epoch {state['epoch'] + 1} step {state['step']}",
              file=sys.stderr, flush=True)
    last_save = time.time()

    def save(epoch, p):
        tmp = a.checkpoint + ".tmp"
        torch.save(dict(model=model.state_dict(), predictor=predictor.state_dict(),
                        opt=opt.state_dict(), torch_rng=torch.get_rng_state(), epochs=epochs,
                        evals=evals, epoch=epoch, step=len(p["step_s"]), progress=p), tmp)
        os.replace(tmp, a.checkpoint)

    for epoch in range(len(epochs), a.epochs):
        model.train()
        predictor.train()
        p = dict(t_sample=0.0, t_compute=0.0, losses=[], step_s=[], sample_step_s=[],
                 sampled_edges=[], positives=0, elapsed=0.0)
        if state is not None and state["epoch"] == epoch:
            p = state["progress"]
        t_sample, t_compute = p["t_sample"], p["t_compute"]
        losses, step_s, sample_step_s = p["losses"], p["step_s"], p["sample_step_s"]
        sampled_edges, positives = p["sampled_edges"], p["positives"]
        # Training time of this epoch so far, summed over the sessions that ran it.
        t0 = time.time() - p["elapsed"]
        it = iter(batches(epoch, len(step_s)))
        while True:
            ts = time.time()
            item = next(it, None)
            if item is None:
                break
            dt = time.time() - ts
            t_sample += dt
            sample_step_s.append(dt)
            if item[0] == "pyg":
                sampled_edges.append(int(item[1].edge_index.shape[1]))
            else:
                sampled_edges.append(int(sum(ei.shape[1] for ei, _, _ in item[2])))
            tc = time.time()
            logits, labels, m = forward(item)
            positives += m
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            t_compute += time.time() - tc
            step_s.append(time.time() - ts)
            if len(step_s) % 100 == 0:
                # Progress for long epochs (stderr; the JSON results stay on stdout).
                print(f"epoch {epoch + 1} step {len(step_s)}: {time.time() - t0:.0f} s, "
                      f"loss {np.mean(losses[-100:]):.4f}", file=sys.stderr, flush=True)
            if a.checkpoint and time.time() - last_save >= a.checkpoint_every_s:
                p.update(t_sample=t_sample, t_compute=t_compute, positives=positives,
                         elapsed=time.time() - t0)
                save(epoch, p)
                last_save = time.time()
        train_s = time.time() - t0
        epochs.append(
            {
                "epoch": epoch + 1,
                "steps": len(step_s),
                "train_s": train_s,
                "sample_s": t_sample,
                "compute_s": t_compute,
                "positive_edges": positives,
                "positive_edges_per_s": positives / train_s,
                "sampled_edges_per_step": float(np.mean(sampled_edges)),
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
            for split in ["valid"] + (["test"] if a.eval_test else []):
                if split not in held_out:
                    continue
                v = mrr(predictor, h, *held_out[split])
                evals.append({"epoch": epoch + 1, "split": split, "mrr": v, "eval_s": time.time() - te})
                print(json.dumps(evals[-1]), flush=True)
        if a.checkpoint:
            save(epoch + 1, dict(t_sample=0.0, t_compute=0.0, losses=[], step_s=[],
                                 sample_step_s=[], sampled_edges=[], positives=0, elapsed=0.0))

    result = {
        "implementation": "pyg",
        "loader": a.loader,
        "torch": torch.__version__,
        "torch_geometric": __import__("torch_geometric").__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dataset": a.dataset,
        "num_nodes": num_nodes,
        "train_edges": int(len(train)),
        "batch_size": a.batch_size,
        "seed": a.seed,
        "load_s": load_s,
        "epochs": epochs,
        "evals": evals,
        "params": sum(p.numel() for p in model.parameters())
        + sum(p.numel() for p in predictor.parameters()),
    }
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("loader", "threads", "params", "num_nodes", "load_s")}))


if __name__ == "__main__":
    main()
