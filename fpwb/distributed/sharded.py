"""Neuron-sharded Frontprop layers over ``torch.distributed``: exact, one rank per slice of neurons.

Every rank sees the same input stream and owns a contiguous slice of the layer's neurons (rank r
holds rows ``shard_bounds(N, world_size, r)``), run as an ordinary FpLinear / FpConv2d; the
outputs are all-gathered (``normalize_output`` is applied to the gathered output, not per shard).

Why the result is bit-identical to the layer in one process, and what that takes:

- Plain rule and ``rule="oja"``: a neuron's path depends only on its own weights, its own
  thresholds and the inputs, so each shard computes exactly the rows of the full layer, *provided
  it follows the same chunk plan*. The engine makes two decisions from the whole layer's state,
  and both change the last bits: it skips silent stretches (nothing fires) with one matmul until
  the layer first fires, and per chunk it picks the Gram or the direct scan from the number of
  neurons that fire in it. Run on its own, a shard would decide from its own neurons (measured:
  thresholds then differ by up to 3e-16 in float64). So the ranks decide together: the silent
  stretch is the minimum over ranks, the scan comes from the global count of firing neurons
  (each rank runs the chunk with a guess, the last chunk's choice, and reruns it from a snapshot
  in the rare chunk where the global count says otherwise), and a shard whose own neurons have
  not fired yet takes the firing path once any rank has fired.
- k-winners-take-all (``k_winners`` below the layer size, with or without ``k_output``): neurons
  interact at each position, so the ranks walk the stream one sample at a time. Each rank sends
  its k best fired candidates (value, global index); the k best of all candidates win (ties to
  the lower neuron index, as in ``fpwb.layers.base.FpLayer``), and a rank with m winners runs
  that sample through its shard with ``k_winners=m``: its m best fired neurons are exactly the
  global winners it holds. The one-process layer this equals is the same layer with
  ``chunk_size=1`` (one sample per chunk: thresholds compared unscaled), which the sharded layer
  requires: chunks of other sizes already differ from it in the last bits in one process. One
  collective per sample makes this mode slow (``benchmarks/distributed.py`` measures it).
  FpConv2d's positions are the locations inside a sample, which its forward cannot take one at
  a time: k-WTA is sharded for FpLinear only.
- Where exactness stops: ``mode="batch"`` and every forward that does not learn compute the
  projections as ``x @ W.T``, and MKL's result for one neuron's column depends on how many
  columns the matrix has (measured: up to 2e-16 relative in float64; ``W @ x.T``, which the
  sequential solvers use, gives the same rows for any slice). There the sharded layer agrees
  with one process to rounding, not bit for bit (one sample at a time, as under k-WTA, is exact).
  ``W @ x.T`` keeps rows only as far as MKL does: exact for the 784-input layers tested, but for
  a tiny FpConv2d (6 kernels of 3x3 split 3 + 3) the first firing of a chunk output a value 1e-16
  off (its weights and thresholds stayed exact: the plain move does not use y).

Refused with a ValueError: rules other than "frontprop" and "oja" (their neurons interact:
soft and rank-k winners, homeostasis across neurons), ``repulsion`` > 0, and on CUDA only the
plain schedule is planned globally (exactness there is not tested).

What the plan reads from ``fpwb.layers``: ``base.SILENT_LOOKAHEAD``, ``engine.max_steps``,
``engine.silent_steps`` and ``engine.gram_pays`` (the same decisions ``FpLayer._run`` makes),
the ``solver`` attribute the layers take for forcing a scan, and that a layer skips silent
stretches only while its ``fire_count`` is all zero. ``tests/test_distributed.py`` compares
with one process, so a change there shows up as a failing test.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..layers import FpConv2d, FpLinear
from ..layers import base, engine

#: Rules whose neurons never interact (plus k-WTA, exchanged per sample): what can be sharded.
SUPPORTED_RULES = ("frontprop", "oja")
#: Switches the sharded layers refuse, with why.
REFUSED = "repulsion > 0 (every learner looks at every other neuron) and rules other than " + \
    " / ".join(SUPPORTED_RULES)


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows [start, stop) of rank ``rank`` when n neurons are split over ``world_size`` ranks in
    contiguous slices whose sizes differ by at most one (the first ranks get the extra ones)."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank!r}")
    if n < world_size:
        raise ValueError(f"cannot split {n} neurons over {world_size} ranks (each needs one)")
    base_size, extra = divmod(n, world_size)
    start = rank * base_size + min(rank, extra)
    return start, start + base_size + (rank < extra)


def _rule_name(layer) -> str:
    rule = layer.rule
    return rule if isinstance(rule, str) else getattr(rule, "name", type(rule).__name__)


def _kwta(layer, n_total: int) -> bool:
    """Whether winners-take-all is in force: k below the layer size (else every fired neuron wins)."""
    return layer.k_winners is not None and layer.k_winners < n_total


def check_shardable(layer, world_size: int):
    """A ValueError naming what is supported when ``layer`` cannot be split exactly over
    ``world_size`` ranks; state untouched."""
    if not isinstance(layer, (FpLinear, FpConv2d)):
        raise ValueError(f"expected an FpLinear or FpConv2d, got {type(layer).__name__}")
    rule = _rule_name(layer)
    if rule not in SUPPORTED_RULES:
        raise ValueError(f"rule {rule!r} cannot be sharded exactly: supported are rules "
                         f"{SUPPORTED_RULES} with or without k_winners / k_output (refused: {REFUSED})")
    if getattr(layer, "repulsion", 0.0) > 0:
        raise ValueError(f"repulsion={layer.repulsion} cannot be sharded: supported are rules "
                         f"{SUPPORTED_RULES} with or without k_winners / k_output (refused: {REFUSED})")
    n = len(layer.weight)
    smallest = n // world_size
    if smallest < 1:
        raise ValueError(f"cannot split {n} neurons over {world_size} ranks (each needs one)")
    if _kwta(layer, n):
        if isinstance(layer, FpConv2d):
            raise ValueError("k_winners on FpConv2d cannot be sharded: its positions are the "
                             "locations inside a sample, which the ranks would have to exchange "
                             "one by one; shard FpConv2d with k_winners=None, or use FpLinear")
        if layer.chunk_size != 1:
            raise ValueError(f"a sharded k_winners layer walks one sample at a time and equals the "
                             f"one-process layer with chunk_size=1: build it with chunk_size=1 "
                             f"(got chunk_size={layer.chunk_size})")
        if layer.k_winners >= smallest:
            raise ValueError(f"k_winners={layer.k_winners} needs more than k neurons on every rank; "
                             f"{n} neurons over {world_size} ranks leaves {smallest}")


def layer_config(layer) -> dict:
    """The constructor keywords (beyond the neuron count and seed) that rebuild ``layer``."""
    config = dict(w_boost=layer.w_boost, t_decay=layer.t_decay, mode=layer.mode,
                  normalize_output=layer.normalize_output, chunk_size=layer.chunk_size,
                  rule=layer.rule, k_winners=layer.k_winners, k_output=layer.k_output,
                  dtype=layer.weight.dtype)
    if isinstance(layer, FpLinear):
        return dict(kind="FpLinear", in_features=layer.in_features, **config)
    return dict(kind="FpConv2d", in_channels=layer.in_channels, kernel_size=layer.kernel_size,
                stride=layer.stride, padding=layer.padding, **config)


def build_layer(config: dict, n_neurons: int, device=None):
    """An ordinary FpLinear / FpConv2d of ``n_neurons`` from :func:`layer_config`'s keywords."""
    config = dict(config)
    kind = config.pop("kind")
    if kind == "FpLinear":
        return FpLinear(config.pop("in_features"), n_neurons, device=device, **config)
    return FpConv2d(config.pop("in_channels"), n_neurons, config.pop("kernel_size"), device=device,
                    **config)


def _state_rows(layer, start: int, stop: int) -> dict:
    """The layer's buffers for neurons [start, stop): per-neuron ones sliced, scalars copied."""
    return {name: (t[start:stop] if t.dim() else t).clone() for name, t in layer.named_buffers()}


def split_layer(layer, rank: int, world_size: int):
    """Rank ``rank``'s slice of ``layer`` as an ordinary layer of the same kind and settings
    (weights, thresholds, fire counts copied; learning flags kept)."""
    check_shardable(layer, world_size)
    start, stop = shard_bounds(len(layer.weight), world_size, rank)
    part = build_layer(layer_config(layer), stop - start, device=layer.weight.device)
    part.load_state_dict(_state_rows(layer, start, stop))
    part.train(layer.training)
    part.frozen = layer.frozen
    return part


def _join(config: dict, states: list[dict]):
    """One ordinary layer from its shards' states, in rank order."""
    n = sum(len(s["weight"]) for s in states)
    layer = build_layer(config, n, device=states[0]["weight"].device)
    layer.load_state_dict({name: torch.cat([s[name] for s in states]) if t.dim() else t
                           for name, t in states[0].items()})
    return layer


def merge_shards(paths):
    """The ordinary layer saved as shards (``ShardedLayer.save`` on every rank), with no process
    group: a layer trained on 8 processes loads on a laptop. ``paths`` in any order."""
    saved = sorted((torch.load(p, map_location="cpu", weights_only=False) for p in paths),
                   key=lambda s: s["rank"])
    world = saved[0]["world_size"]
    if [s["rank"] for s in saved] != list(range(world)) or any(s["world_size"] != world for s in saved):
        raise ValueError(f"expected the shards of ranks 0..{world - 1} of one layer, got ranks "
                         f"{[s['rank'] for s in saved]}")
    layer = _join(saved[0]["config"], [s["state"] for s in saved])
    layer.normalize_output = saved[0]["normalize_output"]
    return layer


def _all_gather_cat(tensor: torch.Tensor, sizes: list[int], group=None) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 1 (rank r's has sizes[r] columns there)."""
    if len(sizes) == 1:
        return tensor
    width = max(sizes)
    if tensor.shape[1] < width:  # gloo gathers equal shapes: pad, then trim
        pad = tensor.new_zeros(tensor.shape[0], width - tensor.shape[1], *tensor.shape[2:])
        tensor = torch.cat([tensor, pad], 1)
    parts = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat([p[:, :n] for p, n in zip(parts, sizes)], 1)


class ShardedLayer(nn.Module):
    """This rank's slice of a Frontprop layer; forward takes the full input and returns the full
    output, equal bit for bit to the layer in one process (see the module docstring).

    Build it with :func:`shard_layer` (every rank holding the same layer, e.g. from one seed) or
    :meth:`load`. ``local`` is the rank's ordinary FpLinear / FpConv2d over neurons
    ``[start, stop)`` of ``out_features``; ``train()``, ``eval()``, ``freeze()`` act on it.
    Collective: every rank of ``group`` must call forward with the same input.
    """

    def __init__(self, local, start: int, total: int, normalize_output: bool, group=None):
        super().__init__()
        self.local = local
        self.local.normalize_output = False  # applied to the gathered output
        self.start, self.stop, self.total = start, start + len(local.weight), total
        self.normalize_output = bool(normalize_output)
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.sizes = [b - a for a, b in (shard_bounds(total, self.world_size, r)
                                         for r in range(self.world_size))]
        self.k_winners = local.k_winners
        self.kwta = _kwta(local, total)
        self._scan = "gram"  # the scan of the last sequential chunk: the next chunk's guess

    @property
    def learning(self) -> bool:
        return self.local.learning

    def freeze(self):
        self.local.freeze()
        return self

    def unfreeze(self):
        self.local.unfreeze()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"ShardedLayer expects a torch.Tensor, got {type(x).__name__}")
        single = isinstance(local, FpLinear) and x.dim() == 1
        if single:
            x = x.unsqueeze(0)
        with torch.no_grad():
            if not self.learning:
                out = self._gather(local(x))
                if self.kwta and local.k_output:
                    out = out * _top_k(out, self.k_winners)
            else:
                out = self._gather(self._learn(x))
            out = self._finish(out)
        return out[0] if single else out

    def _gather(self, out: torch.Tensor) -> torch.Tensor:
        return _all_gather_cat(out, self.sizes, self.group)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        """normalize_output on the gathered output, as ``FpLayer`` does it on its own."""
        if self.normalize_output:
            norm = out.flatten(1).norm(dim=1).clamp_min(torch.finfo(out.dtype).tiny)
            out = out.div_(norm.view(-1, *([1] * (out.dim() - 1))))
        return out

    # The chunk plan of FpLayer._run, decided over all ranks.
    def _learn(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local
        x = x.to(local.weight.dtype)
        if len(x) == 0:
            return local(x)
        local.eval()
        try:
            probe = local(x[:1])  # validates the input
        finally:
            local.train()
        conv = isinstance(local, FpConv2d)
        if conv and local.threshold is None:  # a learning call: thresholds start at 1.0, as the layer's own
            local.threshold = local.weight.new_ones(local.out_channels, *probe.shape[2:])
        rows = self._nonzero(x)
        xv = x[rows]  # (E, ...) the samples the layer learns from, in order
        S = 1 if not conv else local.threshold[0].numel()
        steps = engine.max_steps(local.t_decay, max(1, local.chunk_size // S))
        lookahead = steps * max(1, engine.max_steps(local.t_decay, base.SILENT_LOOKAHEAD // S) // steps)
        fired = x.new_zeros(len(xv), *probe.shape[1:])  # (E, ...) filled piece by piece
        start, quiet = 0, not self._any(local.fire_count.any())
        while start < len(xv):
            if quiet:
                span = xv[start:start + lookahead]
                skip = self._min(self._silent_steps(span))
                quiet = skip == len(span)
                if local.mode == "batch" and not quiet:
                    skip -= skip % steps
                if skip:
                    local(xv[start:start + skip])  # silent on every rank: thresholds decay only
                start += skip
                if quiet:
                    continue
            chunk = slice(start, start + steps)
            fired[chunk] = self._sample(xv[chunk]) if self.kwta else self._chunk(xv[chunk])
            quiet = False
            start += steps
        out = x.new_zeros(len(x), *probe.shape[1:])
        out[rows] = fired
        return out

    def _nonzero(self, x) -> torch.Tensor:
        """Indices of the samples with some non-zero input (the others change nothing)."""
        if isinstance(self.local, FpConv2d):
            return self.local.unit_patches(x)[1].any(1).nonzero().squeeze(1)
        return (x.reshape(len(x), -1).norm(dim=1) > 0).nonzero().squeeze(1)

    def _units(self, xs):
        """Unit rows (E, S, K) and valid (E, S) as the layer's engine sees them."""
        if isinstance(self.local, FpConv2d):
            return self.local.unit_patches(xs)
        unit, valid = base.unit_rows(xs)
        return unit.unsqueeze(1), valid.unsqueeze(1)

    def _silent_steps(self, span) -> int:
        local = self.local
        unit, valid = self._units(span)
        return engine.silent_steps(unit, valid, local.weight.view(len(local.weight), -1),
                                   local.threshold.view(len(local.weight), -1), local.t_decay)

    def _reduce(self, value: int, op) -> int:
        if self.world_size == 1:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.long)
        dist.all_reduce(t, op=op, group=self.group)
        return int(t)

    def _min(self, value) -> int:
        return self._reduce(value, dist.ReduceOp.MIN)

    def _any(self, value) -> bool:
        return bool(self._reduce(bool(value), dist.ReduceOp.MAX))

    def _run_chunk(self, xs, solver):
        """One engine chunk through the shard, on the firing path even before its own neurons fired."""
        local = self.local
        local.solver = solver
        poke = not bool(local.fire_count.any())
        if poke:  # the layer skips silent stretches only while fire_count is all zero
            local.fire_count[0] += 1
        try:
            return local(xs)
        finally:
            if poke:
                local.fire_count[0] -= 1
            local.solver = None

    def _chunk(self, xs) -> torch.Tensor:
        """A chunk of the non-interacting rules, with the scan the whole layer would pick."""
        local = self.local
        if local.mode == "batch" or local.weight.device.type != "cpu":
            return self._run_chunk(xs, None)  # no decision that depends on the neuron set
        snapshot = [t.clone() for t in local.buffers()]
        out = self._run_chunk(xs, self._scan)
        firing = int((out.transpose(0, 1).reshape(len(local.weight), -1) != 0).any(1).sum())
        unit, _ = self._units(xs)
        E, S, K = unit.shape
        choice = "gram" if engine.gram_pays(E * S, self._reduce(firing, dist.ReduceOp.SUM), K) else "direct"
        if choice != self._scan:
            for t, saved in zip(local.buffers(), snapshot):
                t.copy_(saved)
            self._scan = choice
            out = self._run_chunk(xs, choice)
        return out

    def _sample(self, xs) -> torch.Tensor:
        """One sample (1, D) under k-WTA: exchange candidates, then let this rank's winners learn."""
        local, k = self.local, self.k_winners
        unit, _ = base.unit_rows(xs)  # (1, D)
        W, t = local.weight, local.threshold
        y = (W @ unit.T)[:, 0] if local.mode == "sequential" else (unit @ W.T)[0]  # (N_local,) as the engine
        fired = y >= t
        index = fired.nonzero().squeeze(1)
        best = torch.sort(y[index], descending=True, stable=True).indices[:k]  # ties: lower index first
        mine = torch.full((k, 2), -torch.inf, dtype=torch.float64)
        mine[:len(best), 0] = y[index[best]].double()
        mine[:len(best), 1] = (index[best] + self.start).double()
        if self.world_size > 1:
            every = [torch.empty_like(mine) for _ in range(self.world_size)]
            dist.all_gather(every, mine, group=self.group)
            every = torch.cat(every)
        else:
            every = mine
        every = every[every[:, 0] > -torch.inf]
        every = every[torch.argsort(every[:, 1], stable=True)]  # by neuron index, then by value
        winners = every[torch.sort(every[:, 0], descending=True, stable=True).indices[:k], 1]
        m = int(((winners >= self.start) & (winners < self.stop)).sum())
        if m:
            local.k_winners = m
            try:
                return self._run_chunk(xs, None)
            finally:
                local.k_winners = k
        # No winner here: fired neurons output (unless k_output), nothing learns, thresholds decay.
        out = (y * fired if not local.k_output else torch.zeros_like(y)).unsqueeze(0)  # (1, N_local)
        t.mul_((1.0 - local.t_decay) ** 1)
        local.fire_count += (out[0] > 0).long()
        local.samples_seen += 1
        return out

    def state_shard(self) -> dict:
        """What :meth:`save` writes: this rank's state and where it sits in the layer."""
        return {"rank": self.rank, "world_size": self.world_size, "start": self.start, "stop": self.stop,
                "total": self.total, "normalize_output": self.normalize_output,
                "config": layer_config(self.local), "state": self.local.state_dict()}

    def save(self, path):
        """Write this rank's shard (every rank saves its own file)."""
        torch.save(self.state_shard(), path)

    @classmethod
    def load(cls, path, group=None) -> "ShardedLayer":
        """This rank's shard back from :meth:`save` (same world size and rank)."""
        saved = torch.load(path, map_location="cpu", weights_only=False)
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        if (saved["rank"], saved["world_size"]) != (rank, world):
            raise ValueError(f"{path} holds rank {saved['rank']} of {saved['world_size']}; this is rank "
                             f"{rank} of {world} (merge_shards then split_layer re-splits a layer)")
        local = build_layer(saved["config"], saved["stop"] - saved["start"])
        local.load_state_dict(saved["state"])
        return cls(local, saved["start"], saved["total"], saved["normalize_output"], group)

    def extra_repr(self) -> str:
        mode = "k-WTA, one sample per exchange" if self.kwta else "independent neurons"
        return (f"neurons [{self.start}, {self.stop}) of {self.total}, rank {self.rank} of "
                f"{self.world_size}, {mode}, normalize_output={self.normalize_output}")


def _top_k(out: torch.Tensor, k: int) -> torch.Tensor:
    """Mask (B, N) of the k largest positive entries per row (the fired winners), ties to the lower
    index."""
    order = torch.sort(out.masked_fill(out <= 0, -torch.inf), dim=1, descending=True, stable=True).indices
    mask = torch.zeros_like(out, dtype=torch.bool).scatter_(1, order[:, :k], True)
    return mask & (out > 0)


def shard_layer(layer, group=None) -> ShardedLayer:
    """This rank's :class:`ShardedLayer` of ``layer``, which every rank of ``group`` holds alike
    (build it from one seed on each rank). Refuses rules and switches that cannot be sharded."""
    world = dist.get_world_size(group)
    local = split_layer(layer, dist.get_rank(group), world)
    start, _ = shard_bounds(len(layer.weight), world, dist.get_rank(group))
    return ShardedLayer(local, start, len(layer.weight), layer.normalize_output, group)


def gather_layer(sharded: ShardedLayer):
    """The whole layer as an ordinary FpLinear / FpConv2d on every rank (collective)."""
    state = sharded.state_shard()
    states = [None] * sharded.world_size
    dist.all_gather_object(states, state, group=sharded.group)
    layer = _join(state["config"], [s["state"] for s in states])
    layer.normalize_output = sharded.normalize_output
    layer.train(sharded.local.training)
    layer.frozen = sharded.local.frozen
    return layer
