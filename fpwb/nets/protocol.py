"""One protocol for deep conv nets: the same architecture, kernels from every source, the same probe.

A ``NetSpec`` describes a conv net of up to ``len(channels)`` stages; stage k is::

    [PatchWhiten (stage 1) | ChannelStandardize or BatchNorm (k > 1)] -> Readout(FpConv2d) ->
    activation -> pooling

(``build``). Its kernels come from one of ``KERNELS``, every other piece being the same:

- Frontprop (any rule name or rule object with its switches, ``frontprop_variants``): greedy
  layer-wise training with ``FpStack.fit``;
- ``untrained``: the same net at its initial random kernels (the Frontprop net's own start for
  the same seed), only the statistics pieces fitted;
- ``imprint``: each stage's kernels are random patches of that stage's input (greedy);
- ``kmeans``: each stage's kernels are k-means centroids of that stage's unit-length input
  patches (Coates et al. 2011; greedy);
- ``backprop``: the same architecture as a differentiable model (``CosineConv2d``, batch norm in
  place of the running standardisation) with a linear head, trained end to end (the upper
  reference), one net per depth.

Every stage's output, average-pooled to a ``probe_grid`` x ``probe_grid`` map and flattened, goes
to the same linear probe (``fpwb.evaluation.probes.linear_probe``). Greedy training makes the first
k stages of a deeper net exactly the k-stage net (a stage never sees the ones after it), so one
net of the largest depth gives every depth for all but backprop.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..baselines import kmeans_layer
from ..evaluation import diagnostics
from ..evaluation.probes import linear_probe
from ..layers import FpConv2d
from .. import rules as learning_rules
from ..layers.base import unit_rows
from ..layers.stack import FpStack, fp_layer_of
from .pieces import ChannelStandardize, PatchWhiten, Readout, RePU, Triangle, pool

KERNELS = ("untrained", "imprint", "kmeans", "backprop")
#: FpConv2d keywords that take one value for every stage or a list of one per stage (a rate that
#: suits a 16-kernel first stage need not suit a 256-kernel third one).
PER_STAGE = ("w_boost", "t_decay")
ACTIVATIONS = ("triangle", "repu", "relu", "none")
NORMS = ("standardize", "batchnorm", "none")


@dataclass
class NetSpec:
    """A conv net for the protocol. Defaults: SoftHebb's CIFAR-10 net (96/384/1536 channels, 5/3/3
    kernels, 4x4 max-pool stride 2, triangle, normalisation before every layer) scaled to 2 CPU
    cores, with Coates' patch whitening in front."""
    in_channels: int = 1
    channels: tuple = (32, 96, 256)
    kernel_sizes: tuple = (5, 3, 3)
    pool: str = "max"
    pool_kernel: int = 4
    pool_stride: int | tuple = 2  # one for every stage, or one per stage (a stride-1 last pool keeps
                                  # its map larger than the probe grid)
    pool_padding: int = 1
    whiten: bool = True          # PatchWhiten in front of stage 1 (else the raw image patches)
    norm: str = "standardize"    # before stages 2.. : "standardize", "batchnorm" or "none"
    readout: str = "linear"      # what a Readout passes on (see fpwb.evaluation.probes.READOUTS)
    activation: str = "triangle"
    power: float = 1.0           # of the triangle or RePU
    probe_grid: int = 4          # each stage's output is average-pooled to this grid for the probe
    layer: dict = field(default_factory=dict)  # FpConv2d keywords shared by every method (mode, ...;
                                               # PER_STAGE ones may give one value per stage)

    def __post_init__(self):
        self.channels, self.kernel_sizes = tuple(self.channels), tuple(self.kernel_sizes)
        if len(self.channels) != len(self.kernel_sizes) or not self.channels:
            raise ValueError(f"channels and kernel_sizes need one entry per stage, got "
                             f"{self.channels} and {self.kernel_sizes}")
        if not isinstance(self.pool_stride, int):
            self.pool_stride = tuple(self.pool_stride)
            if len(self.pool_stride) != len(self.channels):
                raise ValueError(f"pool_stride needs one int for every stage or one per stage "
                                 f"({len(self.channels)}), got {self.pool_stride}")
        check_per_stage(self.layer, self.depth)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    @property
    def depth(self) -> int:
        return len(self.channels)

    def stride_of(self, stage: int) -> int:
        """The pooling stride after stage ``stage`` (0-based)."""
        return self.pool_stride if isinstance(self.pool_stride, int) else self.pool_stride[stage]

    def describe(self) -> str:
        return (f"channels {list(self.channels)}, kernels {list(self.kernel_sizes)}, "
                f"whiten={self.whiten}, norm={self.norm}, readout={self.readout}, "
                f"activation={self.activation}(power {self.power:g}), pool {self.pool} "
                f"{self.pool_kernel}/{_slashed(self.pool_stride)}/{self.pool_padding}, probe grid {self.probe_grid}")


def _slashed(stride) -> str:
    """A pooling stride as describe() prints it: 2, or one per stage as (2, 2, 1)."""
    return str(stride) if isinstance(stride, int) else str(tuple(stride))


def check_per_stage(layer: dict, depth: int) -> None:
    """Refuse a PER_STAGE keyword given as a list whose length is not the net's number of stages."""
    for name in PER_STAGE:
        value = layer.get(name)
        if isinstance(value, (list, tuple)) and len(value) != depth:
            raise ValueError(f"{name} needs one number for every stage or one per stage ({depth}), "
                             f"got {list(value)}")


def stage_layer(layer: dict, stage: int) -> dict:
    """The FpConv2d keywords of stage ``stage`` (0-based): a PER_STAGE list gives its own entry."""
    return {name: value[stage] if name in PER_STAGE and isinstance(value, (list, tuple)) else value
            for name, value in layer.items()}


def _activation(spec: NetSpec) -> nn.Module:
    return {"triangle": lambda: Triangle(spec.power), "repu": lambda: RePU(spec.power),
            "relu": nn.ReLU, "none": nn.Identity}[spec.activation]()


def build(spec: NetSpec, depth: int | None = None, seed: int = 0, **layer_kwargs) -> tuple[FpStack, list[int]]:
    """The net's first ``depth`` stages as an FpStack, and the index of each stage's last module
    (its output is the stage's output). layer_kwargs (over ``spec.layer``) go to every FpConv2d,
    a PER_STAGE one given as a list entry by entry; stage k's kernels start from seed + k."""
    depth = spec.depth if depth is None else depth
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= spec.depth:
        raise ValueError(f"depth must be an int in [1, {spec.depth}], got {depth!r}")
    layer = {**spec.layer, **layer_kwargs}
    check_per_stage(layer, spec.depth)
    modules, ends, c = [], [], spec.in_channels
    for k in range(depth):
        size, kwargs = spec.kernel_sizes[k], stage_layer(layer, k)
        if k == 0 and spec.whiten:
            modules.append(PatchWhiten(c, size, padding=size // 2))
            conv = FpConv2d(modules[-1].out_channels, spec.channels[k], 1, seed=seed + k, **kwargs)
        else:
            if k > 0 and spec.norm != "none":
                modules.append(ChannelStandardize(c) if spec.norm == "standardize"
                               else nn.BatchNorm2d(c, affine=False))
            conv = FpConv2d(c, spec.channels[k], size, padding=size // 2, seed=seed + k, **kwargs)
        modules += [Readout(conv, spec.readout), _activation(spec),
                    pool(spec.pool, spec.pool_kernel, spec.stride_of(k), spec.pool_padding)]
        ends.append(len(modules) - 1)
        c = spec.channels[k]
    return FpStack(*modules), ends


def architecture(module: nn.Module) -> list[tuple]:
    """What a net is made of, to compare twins: per module its type, the Fp layer's constructor
    settings and weight shape, and the piece's settings (``extra_repr``)."""
    rows = []
    for m in module.modules() if not isinstance(module, FpStack) else module.layers:
        fp = fp_layer_of(m)
        if fp is not None:
            rows.append((type(m).__name__, type(fp).__name__, tuple(fp.weight.shape),
                         getattr(fp, "kernel_size", None), getattr(fp, "padding", None),
                         getattr(m, "readout", None)))
        else:
            rows.append((type(m).__name__, m.extra_repr().split(", seen=")[0]))
    return rows


def rule_label(rule) -> str:
    """A method's name for a rule: its name, with its settings where they are not its defaults
    (``rank_k(rank=3, delta=0.2)``), so that two settings of one rule stay two methods."""
    if isinstance(rule, str):
        return rule
    name = getattr(rule, "name", type(rule).__name__)
    try:
        default = type(rule)().settings()
    except TypeError:  # a rule without defaults: every object is its own setting
        default = None
    return name if rule.settings() == default else f"{name}({rule.extra_repr()})"


def frontprop_variants(rules=None, switches=None) -> dict:
    """Frontprop methods: every rule (name or rule object, passed to ``FpConv2d(rule=...)``; default
    every rule the layers accept) with every switch setting (name -> FpConv2d keywords; default
    the plain rule). Returns label -> FpConv2d keywords."""
    rules = list(learning_rules.names() if rules is None else rules)
    switches = {"": {}} if switches is None else switches
    return {" ".join(filter(None, [rule_label(r), s])): {"rule": r, **kw}
            for r in rules for s, kw in switches.items() if _accepts(r, kw)}


def _accepts(rule, keywords) -> bool:
    """Whether the rule runs under these switches (rules that pick their own learners take no
    k_winners or repulsion)."""
    try:
        learning_rules.get(rule).check_switches(k_winners=keywords.get("k_winners"),
                                                repulsion=keywords.get("repulsion", 0.0))
    except ValueError:
        return False
    return True


@torch.no_grad()
def stage_features(model: nn.Module, ends: list[int], X: torch.Tensor, grid: int,
                   batch_size: int = 500) -> list[torch.Tensor]:
    """Every stage's output on X, average-pooled to grid x grid and flattened, in eval mode (nothing
    learns or collects): one (n, features) tensor per stage. model: an FpStack or its backprop
    twin (an nn.Sequential)."""
    training = model.training
    modules = model.layers if isinstance(model, FpStack) else model
    model.eval()
    try:
        parts = [[] for _ in ends]
        for s in range(0, len(X), batch_size):
            x = X[s:s + batch_size]
            for i, m in enumerate(modules[:ends[-1] + 1]):
                x = m(x)
                if i in ends:
                    parts[ends.index(i)].append(F.adaptive_avg_pool2d(x, grid).flatten(1).float().cpu())
        return [torch.cat(p) for p in parts]
    finally:
        model.train(training)


def _input_patches(layer: FpConv2d, inputs: torch.Tensor, n: int, generator) -> torch.Tensor:
    """n random non-zero unit patches of the layer's input (with replacement if fewer exist). # (n, K)"""
    unit, valid = layer.unit_patches(inputs)  # (B, L, K), (B, L)
    unit = unit[valid]
    if len(unit) == 0:
        raise ValueError("the layer's input has no non-zero patch to take kernels from")
    pick = torch.randint(len(unit), (n,), generator=generator) if len(unit) < n else \
        torch.randperm(len(unit), generator=generator)[:n]
    return unit[pick]


def fit_kernels(stack: FpStack, X: torch.Tensor, how: str, seed: int = 0, sample: int = 2000,
                patches: int = 50000, batch_size: int = 256) -> FpStack:
    """Greedy, stage by stage: fit the statistics pieces in front of the Fp layer, then set its
    kernels (``imprint``: random input patches; ``kmeans``: k-means centroids of ``patches`` input
    patches from ``sample`` images) and freeze it. The statistics behind the last layer last."""
    if how not in ("imprint", "kmeans"):
        raise ValueError(f"how must be 'imprint' or 'kmeans', got {how!r}")
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(X), generator=generator)[:sample]
    for i in stack.fp_indices:
        stack.collect_statistics(X, stop=i, batch_size=batch_size)
        layer = fp_layer_of(stack[i])
        inputs = X[rows] if i == 0 else stack.embed(X[rows], i - 1, flatten=False)
        N = layer.out_channels
        if how == "imprint":
            weight = _input_patches(layer, inputs, N, generator)
        else:
            weight = kmeans_layer(_input_patches(layer, inputs, max(patches, N), generator), N,
                                  seed=seed).weight
        layer.weight.copy_(unit_rows(weight.to(layer.weight))[0].view_as(layer.weight))
        layer.freeze()
    return stack.collect_statistics(X, batch_size=batch_size)


class CosineConv2d(nn.Module):
    """Differentiable FpConv2d cosines: ``conv2d(x, w / |w|) / |patch|`` (0 for all-zero patches),
    the function a ``Readout(FpConv2d, "linear")`` computes (``relu``: ``"relu"``'s), with w a
    trainable parameter."""

    def __init__(self, layer: FpConv2d, relu: bool = False):
        super().__init__()
        self.relu = relu
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.stride, self.padding = layer.stride, layer.padding
        self.register_buffer("ones", torch.ones(1, *layer.weight.shape[1:], dtype=layer.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight / self.weight.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        norm = F.conv2d(x * x, self.ones, stride=self.stride, padding=self.padding).sqrt()
        y = F.conv2d(x, w, stride=self.stride, padding=self.padding) / norm.clamp_min(1e-12)
        return y.clamp_min(0) if self.relu else y


def backprop_twin(stack: FpStack, readout: str) -> nn.Sequential:
    """The stack as a differentiable model: each Readout(FpConv2d) becomes a CosineConv2d with the
    same starting kernels (a ``relu`` readout stays a ReLU of the cosines, any other readout
    becomes the plain cosines: thresholds have no gradient), each ChannelStandardize a batch norm
    without affine parameters; the other pieces are copied (fitted ones keep their statistics
    and stay fixed, in eval mode)."""
    modules = []
    for m in stack.layers:
        fp = fp_layer_of(m)
        if fp is not None:
            modules.append(CosineConv2d(fp, relu=readout == "relu"))
        elif isinstance(m, ChannelStandardize):
            modules.append(nn.BatchNorm2d(m.num_channels, affine=False))
        else:
            modules.append(copy.deepcopy(m))
    return nn.Sequential(*modules)


def train_backprop(model: nn.Sequential, ends, X, y, grid: int, epochs: int, seed: int,
                   lr: float = 1e-3, batch_size: int = 64, progress=None) -> nn.Sequential:
    """Adam on the cross-entropy of a linear head on the last stage's probe features."""
    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    with torch.no_grad():
        width = F.adaptive_avg_pool2d(model[:ends[-1] + 1].eval()(X[:2]), grid).flatten(1).shape[1]
    head = nn.Linear(width, n_classes).to(X.device)
    params = [p for p in model.parameters()] + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    fixed = [m for m in model if isinstance(m, PatchWhiten)]
    for _ in range(epochs):
        model.train()
        for m in fixed:
            m.eval()
        order = torch.randperm(len(X), generator=generator)
        for s in range(0, len(X), batch_size):
            idx = order[s:s + batch_size]
            out = F.adaptive_avg_pool2d(model[:ends[-1] + 1](X[idx]), grid).flatten(1)
            loss = F.cross_entropy(head(out), y[idx].to(X.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress.update(1)
    return model.eval()


def _initial(stack):
    return [f.weight.detach().clone() for f in stack.fp_layers()]


def run(spec: NetSpec, data, *, frontprop: dict, kernels=KERNELS, seeds=(0, 1, 2), depths=None,
        epochs: int = 1, batch_size: int = 256, backprop_epochs: int = 3, patches: int = 20000,
        progress: bool = True, keep: bool = False) -> dict:
    """Every method on one protocol. data: (X_train, y_train, X_test, y_test); frontprop: label ->
    FpConv2d keywords (``frontprop_variants``); kernels: the other methods (``KERNELS``);
    patches: input patches per stage for k-means.

    Returns {"rows": one per (method, seed, depth, stage): probe accuracy, learned share and
    redundancy of the stage's Fp layer, training seconds, the layer's mode; "nets": (method, seed)
    -> (stack, ends, initial weights) when ``keep``}. ``depth`` is the net's number of stages and
    ``stage`` the probed stage (1..depth); for the greedy methods the rows of depth d are read from
    the deepest net (its first d stages are the d-stage net), backprop trains one net per depth.
    """
    from tqdm.auto import tqdm

    X_train, y_train, X_test, y_test = data
    depths = tuple(range(1, spec.depth + 1)) if depths is None else tuple(depths)
    unknown = set(kernels) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernel sources {sorted(unknown)}; expected some of {KERNELS}")
    methods = list(frontprop) + [k for k in kernels if k != "backprop"]
    total = len(seeds) * (len(methods) + ("backprop" in kernels) * len(depths))
    bar = tqdm(total=total, desc="deep conv nets", disable=not progress)
    rows, nets = [], {}
    mode = {**{"mode": "sequential"}, **spec.layer}["mode"]

    def probe_rows(method, seed, depth_stages, features_train, features_test, layers, initial, seconds):
        for depth in depths:
            for stage in range(1, depth + 1) if depth_stages is None else [depth_stages]:
                if stage > len(features_train):
                    continue
                layer = layers[stage - 1] if layers else None
                rows.append({
                    "method": method, "seed": seed, "depth": depth, "stage": stage,
                    "probe": linear_probe(features_train[stage - 1], y_train, features_test[stage - 1],
                                          y_test)["accuracy"],
                    "learned_share": None if layer is None else diagnostics.learned_share(layer, initial[stage - 1]),
                    "redundant": None if layer is None else diagnostics.redundancy(layer)["neurons"],
                    "features": features_train[stage - 1].shape[1], "seconds": seconds,
                    "mode": frontprop[method].get("mode", mode) if method in frontprop else "-"})

    for seed in seeds:
        for method in methods:
            stack, ends = build(spec, max(depths), seed, **frontprop.get(method, {}))
            initial = _initial(stack)
            start = time.perf_counter()
            if method in frontprop:
                stopped = False
                try:
                    stack.fit(X_train, epochs=epochs, batch_size=batch_size, schedule="greedy", seed=seed)
                except ValueError as error:  # a stage's weights left the finite numbers
                    if "NaN or Inf" not in str(error) and "diverged" not in str(error):
                        raise
                    stopped = True
                # The stage that diverged: non-finite weights, or (the layer undid its chunk and
                # stopped the fit) the first stage short of its samples.
                diverged = [k + 1 for k, f in enumerate(stack.fp_layers())
                            if not bool(torch.isfinite(f.weight).all())
                            or (stopped and int(f.samples_seen) < epochs * len(X_train))]
                if diverged:
                    rows.extend({"method": method, "seed": seed, "depth": d, "stage": k, "probe": float("nan"),
                                 "learned_share": None, "redundant": None, "features": 0,
                                 "seconds": time.perf_counter() - start, "mode": frontprop[method].get("mode", mode),
                                 "diverged": diverged[0]} for d in depths for k in range(1, d + 1))
                    bar.update(1)
                    continue
            elif method == "untrained":
                for layer in stack.fp_layers():
                    layer.freeze()
                stack.fit(X_train, epochs=1, batch_size=batch_size, schedule="greedy", seed=seed)
            else:
                fit_kernels(stack, X_train, method, seed=seed, patches=patches, batch_size=batch_size)
            seconds = time.perf_counter() - start
            train_f = stage_features(stack, ends, X_train, spec.probe_grid)
            test_f = stage_features(stack, ends, X_test, spec.probe_grid)
            probe_rows(method, seed, None, train_f, test_f, stack.fp_layers(), initial, seconds)
            if keep:
                nets[(method, seed)] = (stack, ends, initial)
            bar.update(1)
        if "backprop" in kernels:
            for depth in depths:
                stack, ends = build(spec, depth, seed)
                stack.collect_statistics(X_train, stop=stack.fp_indices[0], batch_size=batch_size)
                start = time.perf_counter()
                model = train_backprop(backprop_twin(stack, spec.readout), ends, X_train, y_train,
                                       spec.probe_grid, backprop_epochs, seed)
                seconds = time.perf_counter() - start
                train_f = stage_features(model, ends, X_train, spec.probe_grid)
                test_f = stage_features(model, ends, X_test, spec.probe_grid)
                for stage in range(1, depth + 1):
                    rows.append({"method": "backprop", "seed": seed, "depth": depth, "stage": stage,
                                 "probe": linear_probe(train_f[stage - 1], y_train, test_f[stage - 1],
                                                       y_test)["accuracy"],
                                 "learned_share": None, "redundant": None,
                                 "features": train_f[stage - 1].shape[1], "seconds": seconds, "mode": "-"})
                if keep:
                    nets[("backprop", seed, depth)] = (model, ends, None)
                bar.update(1)
    bar.close()
    return {"rows": rows, "nets": nets, "spec": asdict(spec)}


#: What a row holds that the method computed (not how long it took).
RESULT_FIELDS = ("probe", "learned_share", "redundant", "features", "mode", "diverged")


def combine(runs: dict[str, dict]) -> list[dict]:
    """The rows of several runs of one protocol (name -> {"rows", "spec"}, as ``run`` returns them)
    as the rows of one run: every (method, seed) once, from the first run that has it, the
    Frontprop methods in the runs' order and then ``KERNELS`` (as ``run`` orders them). Runs of
    other methods add methods; runs of other seeds add seeds.
    A (method, seed) in several runs must have computed the same rows in each (``RESULT_FIELDS``,
    for every depth and stage; the seconds may differ): that is the check that the runs share their
    code and settings. Every method must end up with the same seeds, so that the table's means and
    margins compare like with like. ValueError names the runs, method and seeds at fault."""
    if not runs:
        raise ValueError("combine needs at least one run")
    (first, reference), *others = runs.items()
    for name, other in others:
        if other["spec"] != reference["spec"]:
            raise ValueError(f"runs {first!r} and {name!r} have different nets: {reference['spec']} "
                             f"against {other['spec']}")

    def results(rows, method, seed):
        return sorted((r["depth"], r["stage"], *(repr(r.get(f)) for f in RESULT_FIELDS))
                      for r in rows if (r["method"], r["seed"]) == (method, seed))

    kept, source, order = [], {}, {}
    for name, run in runs.items():
        for method, seed in dict.fromkeys((r["method"], r["seed"]) for r in run["rows"]):
            order.setdefault(method, len(order))
            if (method, seed) not in source:
                source[method, seed] = name
                kept.extend(r for r in run["rows"] if (r["method"], r["seed"]) == (method, seed))
            elif results(run["rows"], method, seed) != results(runs[source[method, seed]]["rows"], method, seed):
                raise ValueError(f"method {method!r} has other results for seed {seed} in run {name!r} than in "
                                 f"run {source[method, seed]!r}: the runs differ in code or settings")
    seeds = {method: sorted(s for m, s in source if m == method) for method in order}
    if len({tuple(s) for s in seeds.values()}) > 1:
        raise ValueError("the combined methods would have different seeds ("
                         + ", ".join(f"{m}: {s}" for m, s in seeds.items())
                         + "); combine runs that give every method the same seeds")
    last = {k: i for i, k in enumerate(KERNELS, start=1)}
    return sorted(kept, key=lambda r: (last.get(r["method"], 0), order[r["method"]], r["seed"]))


def summary(rows: list[dict]) -> dict:
    """(method, depth) -> {mean, std, n} of the last-stage probe, and (method, depth, stage) of
    every stage, over seeds; learned share per (method, stage) as a mean."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["method"], r["depth"], r["stage"]), []).append(r)
    out = {}
    for (method, depth, stage), rs in groups.items():
        acc = np.array([r["probe"] for r in rs])
        shares = [r["learned_share"] for r in rs if r["learned_share"] is not None]
        out[(method, depth, stage)] = {"mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                                       "n": len(acc),
                                       "learned_share": float(np.mean(shares)) if shares else None,
                                       "redundant": float(np.mean([r["redundant"] for r in rs]))
                                       if rs[0]["redundant"] is not None else None,
                                       "mode": rs[0]["mode"]}
    return out


def probe_cell(entry: dict) -> str:
    """A ``summary`` entry as a table cell, in %: mean ± std over seeds, the mean alone for one
    seed (no spread to show), "diverged" where the probe is NaN."""
    if np.isnan(entry["mean"]):
        return "diverged"
    if entry["n"] == 1:
        return f"{100 * entry['mean']:.2f}"
    return f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}"


def table(rows: list[dict], reference: str = "untrained") -> str:
    """A Markdown table: per method, the last-stage probe at every depth (``probe_cell``),
    the gain over ``reference`` at the same depth, and the learned share of each stage."""
    s = summary(rows)
    depths = sorted({d for (_, d, _) in s})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = ["method", "mode"] + [f"depth {d}" for d in depths] + \
        [f"vs {reference} @{d}" for d in depths] + ["learned share per stage"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m, s[(m, depths[0], depths[0])]["mode"]]
        for d in depths:
            e = s.get((m, d, d))
            cells.append("-" if e is None else probe_cell(e))
        for d in depths:
            e, r = s.get((m, d, d)), s.get((reference, d, d))
            cells.append("-" if e is None or r is None or np.isnan(e["mean"]) else
                         f"{100 * (e['mean'] - r['mean']):+.2f}")
        shares = [s[(m, depths[-1], k)]["learned_share"] for k in range(1, depths[-1] + 1)
                  if (m, depths[-1], k) in s]
        cells.append(" / ".join("-" if v is None else f"{v:.2f}" for v in shares))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_data(dataset: str = "fashion_mnist", n_train: int | None = None, n_test: int | None = None,
              smoke: bool = False, seed: int = 0, root="data"):
    """(X_train, y_train, X_test, y_test, name): the data set's splits, each subsampled to n images
    chosen at random with ``seed`` (the same images for every method; None keeps the split).
    ``smoke`` uses digits (8x8, shipped with scikit-learn) whatever ``dataset`` says."""
    from ..data import load

    dataset = "digits" if smoke else dataset
    X_train, y_train = load(dataset, "train", root=root, download=False)
    X_test, y_test = load(dataset, "test", root=root, download=False)
    generator = torch.Generator().manual_seed(seed)

    def subsample(X, y, n):
        if n is None or n >= len(X):
            return X, y
        keep = torch.randperm(len(X), generator=generator)[:n].sort().values
        return X[keep], y[keep]

    return (*subsample(X_train, y_train, n_train), *subsample(X_test, y_test, n_test), dataset)


def smoke_spec(in_channels: int = 1, **layer) -> NetSpec:
    """A net that runs in seconds on digits (8x8): 4/8/16 channels, 3x3 kernels, 2x2 probe grid."""
    return NetSpec(in_channels=in_channels, channels=(4, 8, 16), kernel_sizes=(3, 3, 3), probe_grid=2,
                   layer=layer)
