"""Decentralised Frontprop: learners on their own streams that merge now and then.

Each of L learners holds a whole FpLinear (all start from the same seed, as if one initial layer
had been handed out) and learns from its own stream: a shard of the data, in its own order. Every
``merge_every`` samples of its stream the learners exchange their layers and all continue from
the same merged layer:

- ``"average"``: each learner's neurons are matched to learner 0's by the Hungarian algorithm on
  weight cosines (``scipy.optimize.linear_sum_assignment``), then matched neurons are averaged
  (weights renormalised, thresholds averaged), weighted by how often each fired since the last
  merge, so that a neuron that never fired on a learner's shard does not dilute one that learned
  on another (equal weights when none of a match fired).
- ``"pool"``: each learner contributes its most-fired neurons since the last merge (N / L each, the
  first learners one more when L does not divide N; ties to the lower index), with their
  thresholds.

``train_decentralised`` runs the learners in one process, one after another between merges, or
with ``distributed=True`` one learner per rank of the current process group (the merge is an
all-gather of every learner's weights, thresholds and fire counts, then the same computation on
every rank): both give the same layer bit for bit. ``bytes_per_sample`` counts what a learner
sends; ``backprop_bytes_per_sample`` what data-parallel backprop would (a ring all-reduce of the
full gradient every step).
"""
from __future__ import annotations

import math
import statistics

import numpy as np
import torch
import torch.distributed as dist
from scipy.optimize import linear_sum_assignment

from ..layers import FpLinear

MERGES = ("average", "pool")


def _matching(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """order (N,) such that other[order[i]] is matched to reference[i], maximising the summed
    weight cosines."""
    cosines = (reference / reference.norm(dim=1, keepdim=True)) @ (other / other.norm(dim=1, keepdim=True)).T
    rows, cols = linear_sum_assignment(cosines.double().numpy(), maximize=True)
    return torch.from_numpy(cols[np.argsort(rows)])


def merge_layers(weights, thresholds, fired, merge: str):
    """Merge L learners' weight (N, D), threshold (N,) and fired-since-last-merge (N,) lists (see
    the module docstring). Returns the merged weight, threshold and fired (summed over the
    neurons merged into each), and source (N,): the position each merged neuron had on its
    learner (learner 0's for "average"), where all learners held the same layer at the last
    merge."""
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    n = len(weights[0])
    if merge == "pool":
        quota = [n // len(weights) + (i < n % len(weights)) for i in range(len(weights))]
        picks = [torch.sort(f, descending=True, stable=True).indices[:q] for f, q in zip(fired, quota)]
        return (torch.cat([w[p] for w, p in zip(weights, picks)]),
                torch.cat([t[p] for t, p in zip(thresholds, picks)]),
                torch.cat([f[p] for f, p in zip(fired, picks)]), torch.cat(picks))
    orders = [torch.arange(n)] + [_matching(weights[0], w) for w in weights[1:]]
    W = torch.stack([w[o] for w, o in zip(weights, orders)])  # (L, N, D)
    T = torch.stack([t[o] for t, o in zip(thresholds, orders)])  # (L, N)
    F = torch.stack([f[o] for f, o in zip(fired, orders)]).to(W.dtype)  # (L, N)
    share = torch.where(F.sum(0) > 0, F / F.sum(0).clamp_min(1), torch.full_like(F, 1 / len(weights)))
    weight = (share.unsqueeze(-1) * W).sum(0)
    weight /= weight.norm(dim=1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
    return weight, (share * T).sum(0), F.sum(0).long(), orders[0]


def streams(n_samples: int, n_learners: int, seed: int) -> list[torch.Tensor]:
    """Each learner's sample indices: a seeded permutation cut into n_learners contiguous shards
    (sizes differ by at most one), each shard in its own seeded order."""
    order = torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed))
    shards = torch.tensor_split(order, n_learners)
    return [s[torch.randperm(len(s), generator=torch.Generator().manual_seed(seed + 1 + i))]
            for i, s in enumerate(shards)]


def bytes_per_sample(n_neurons: int, in_features: int, n_learners: int, merge_every, itemsize: int = 4) -> float:
    """Bytes one learner sends per sample of its stream: at each merge its weights, thresholds
    (``itemsize`` bytes each) and fire counts (8 bytes) to each of the L - 1 others (an
    all-gather: a ring sends the same amount). 0 for one learner or no merge before the end."""
    if n_learners == 1 or merge_every is None:
        return 0.0
    payload = n_neurons * (in_features + 1) * itemsize + n_neurons * 8
    return (n_learners - 1) * payload / merge_every


def backprop_bytes_per_sample(n_parameters: int, n_learners: int, batch_size: int = 1,
                              itemsize: int = 4) -> float:
    """Bytes one worker of data-parallel backprop sends per sample: a ring all-reduce of the full
    gradient every step sends 2 (L - 1) / L of it, one step per ``batch_size`` samples."""
    return 2 * (n_learners - 1) / n_learners * n_parameters * itemsize / batch_size


def train_decentralised(X: torch.Tensor, *, n_learners: int, n_neurons: int, merge_every,
                        merge: str = "average", seed: int = 0, distributed: bool = False,
                        batch_size: int = 256, **layer_kwargs) -> tuple[FpLinear, dict]:
    """L learners over shards of X (n, D), merging every ``merge_every`` samples of each stream
    (None: once, at the end). Returns the merged FpLinear (frozen) and {merges, bytes_per_sample}.

    ``distributed``: this rank is learner ``rank`` of the current process group (its size must be
    ``n_learners``); otherwise all learners run here. ``layer_kwargs`` go to FpLinear.
    """
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    if isinstance(n_learners, bool) or not isinstance(n_learners, int) or n_learners < 1:
        raise ValueError(f"n_learners must be a positive int, got {n_learners!r}")
    if merge_every is not None and (isinstance(merge_every, bool) or not isinstance(merge_every, int)
                                    or merge_every < 1):
        raise ValueError(f"merge_every must be a positive int or None, got {merge_every!r}")
    if distributed and dist.get_world_size() != n_learners:
        raise ValueError(f"distributed=True runs one learner per rank: n_learners={n_learners} but the "
                         f"process group has {dist.get_world_size()} ranks")
    X = X.reshape(len(X), -1)
    paths = streams(len(X), n_learners, seed)
    mine = [dist.get_rank()] if distributed else list(range(n_learners))
    layers = {i: FpLinear(X.shape[1], n_neurons, seed=seed, **layer_kwargs) for i in mine}
    dtype = layers[mine[0]].weight.dtype
    X = X.to(dtype)
    longest = max(len(p) for p in paths)
    interval = merge_every or longest
    merges = 0
    shared = torch.zeros(n_neurons, dtype=torch.long)  # fire counts of the last merged layer
    for begin in range(0, longest, interval):
        states = {}
        for i in mine:
            layer, part = layers[i], paths[i][begin:begin + interval]
            for b in range(0, len(part), batch_size):
                layer(X[part[b:b + batch_size]])
            states[i] = (layer.weight, layer.threshold, layer.fire_count - shared)
        if n_learners == 1:
            continue
        weights, thresholds, fired = _exchange(states, n_learners, distributed)
        weight, threshold, merged_fired, source = merge_layers(weights, thresholds, fired, merge)
        count = shared[source] + merged_fired  # the merged neurons' firings on every learner so far
        merges += 1
        for i in mine:
            layers[i].weight.copy_(weight)
            layers[i].threshold.copy_(threshold)
            layers[i].fire_count.copy_(count)
        shared = count
    result = layers[mine[0]]
    itemsize = torch.finfo(dtype).bits // 8
    return result.freeze(), {"merges": merges, "bytes_per_sample": bytes_per_sample(
        n_neurons, X.shape[1], n_learners, merge_every, itemsize)}


def _exchange(states: dict, n_learners: int, distributed: bool):
    """Every learner's (weight, threshold, fired) as lists in learner order."""
    if not distributed:
        return [[states[i][k] for i in range(n_learners)] for k in range(3)]
    (weight, threshold, fired), = states.values()
    out = []
    for t in (weight, threshold, fired):
        parts = [torch.empty_like(t) for _ in range(n_learners)]
        dist.all_gather(parts, t.contiguous())
        out.append(parts)
    return out


def evaluate(layer, initial_weight, X_train, y_train, X_test, y_test) -> dict:
    """Probe accuracy (linear probe on the relu readout), learned share and redundancy of a layer."""
    from ..evaluation.diagnostics import learned_share, redundancy
    from ..evaluation.probes import embed, linear_probe

    probe = linear_probe(embed(layer, X_train, readout="relu"), y_train,
                         embed(layer, X_test, readout="relu"), y_test)
    return {"probe_acc": probe["accuracy"], "learned_share": learned_share(layer, initial_weight),
            "redundancy": redundancy(layer)["neurons"]}


def study(X_train, y_train, X_test, y_test, *, learners=(1, 2, 4, 8), intervals=(100, 1000, None),
          merges=MERGES, seeds=(0,), n_neurons: int = 200, progress: bool = False, **layer_kwargs) -> list[dict]:
    """Decentralised learners against one sequential learner (1 learner: it sees all the data) and
    a random layer, same data, size, seeds, probe and readout. One row per (learners, interval,
    merge, seed); the sequential learner and random layer as learners=1 rows with merge
    "sequential" / "random". Keys: learners, merge_every, merge, seed, probe_acc, learned_share,
    redundancy (share of neurons in a pair with cosine > 0.95), bytes_per_sample. Learners all
    start from the seed's layer (``initial_weight`` of learned_share)."""
    from tqdm.auto import tqdm

    from ..baselines import random_layer

    X_train = X_train.reshape(len(X_train), -1)
    X_test = X_test.reshape(len(X_test), -1)
    jobs = [(1, None, "sequential", s) for s in seeds] + [(1, None, "random", s) for s in seeds]
    jobs += [(L, m, merge, s) for L in learners if L > 1 for m in intervals for merge in merges for s in seeds]
    rows = []
    for L, every, merge, seed in tqdm(jobs, disable=not progress, desc="decentralised"):
        initial = FpLinear(X_train.shape[1], n_neurons, seed=seed, **layer_kwargs).weight
        if merge == "random":
            layer, info = random_layer(X_train.shape[1], n_neurons, seed=seed), {"bytes_per_sample": 0.0}
        else:
            layer, info = train_decentralised(X_train, n_learners=L, n_neurons=n_neurons, merge_every=every,
                                              merge="average" if merge == "sequential" else merge,
                                              seed=seed, **layer_kwargs)
        scores = evaluate(layer, initial, X_train, y_train, X_test, y_test)
        rows.append({"learners": L, "merge_every": every, "merge": merge, "seed": seed, **scores,
                     "bytes_per_sample": info["bytes_per_sample"]})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """The rows of :func:`study` per (learners, merge_every, merge): probe accuracy's mean and
    spread over seeds (``probe_acc``, ``probe_sd``), mean learned share and redundancy, bytes per
    sample and the number of seeds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["learners"], r["merge_every"], r["merge"]), []).append(r)
    out = []
    for (learners, every, merge), rs in groups.items():
        accs = [r["probe_acc"] for r in rs]
        out.append({"learners": learners, "merge_every": every, "merge": merge,
                    "probe_acc": statistics.mean(accs), "probe_sd": statistics.pstdev(accs),
                    "learned_share": statistics.mean(r["learned_share"] for r in rs),
                    "redundancy": statistics.mean(r["redundancy"] for r in rs),
                    "bytes_per_sample": rs[0]["bytes_per_sample"], "seeds": len(rs)})
    return out
