"""The Rule base: what every learning rule says, and what its fast paths may declare.

A rule decides, at one position (a sample of FpLinear, an output location of FpConv2d), which
neurons fire, which of them learn, how their weights and thresholds change, and what the layer
outputs. ``Rule.step`` says that in plain torch, one position at a time: it is the rule's
*reference*, and ``mode="reference"`` runs it in any layer. ``Rule.end_step`` is what happens to
every threshold once per step (sample), after its positions: the decay.

The default ``step`` is the Frontprop family: a neuron fires where ``y = w . x >= t``; the fired
neurons learn (with ``k_winners``: the k most excited of them, ties to the lower index); a learner
moves to ``w' = c * w + d * x`` with ``(c, d) = update(y, w_boost, count, step, params)``, plus the
repulsion push when that switch is on, renormalised when ``renormalise``; its threshold becomes
y. A rule of that family only writes ``update``.

What the fast paths need, declared as class attributes:

- ``update`` (a plain Python function of numbers, see ``UPDATE_SIGNATURE``): the linear form of a
  learner's move. It is called on torch tensors by the reference and the device solvers and
  compiled by numba for the CPU kernels, so it must use arithmetic only (no ``if`` on values, no
  torch or math calls). ``count`` is how often the neuron learned before (``learn_count``) and
  ``step`` the global index of the sample (``samples_seen`` plus its place in the call).
- ``constant_update``: True when ``update`` ignores y, count and step (the plain rule); the
  kernels then call it once per chunk instead of at every firing.
- ``batch_update`` (see ``BATCH_SIGNATURE``): how a neuron that learned at n positions of a batch
  chunk combines those moves into one ``w' = c * w + sum_i d[i] * x_i``; needed for ``mode="batch"``.
- ``interacts``: True when a neuron's learning depends on the other neurons at the same position
  (soft competition, ranks); then no per-neuron solver applies and the rule writes its own
  ``step`` and, for batch mode, ``batch_move``.
- ``plain_thresholds``: False when thresholds do more than "set to y on learning, decay once per
  step" (homeostasis); the scans assume the plain dynamics.

A rule that declares nothing fast still runs everywhere: sequential mode falls back to the
reference walk. ``params()`` returns the rule's numeric hyper-parameters in the order its
``update`` reads them.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import types

#: ``update(y, w_boost, count, step, params) -> (c, d)``: all float64, params a float64 array.
UPDATE_SIGNATURE = types.UniTuple(types.float64, 2)(
    types.float64, types.float64, types.float64, types.float64, types.float64[::1])
#: ``batch_update(ys, n, w_boost, count, step, params, d) -> c``: ys (the neuron's n learned
#: values in stream order) and d (out: the weight of each of those inputs) float64 arrays.
BATCH_SIGNATURE = types.float64(types.float64[::1], types.int64, types.float64, types.float64,
                                types.float64, types.float64[::1], types.float64[::1])

_COMPILED: dict = {}  # (function, signature) -> compiled C callback, shared by every rule object


def compiled(function, signature):
    """``function`` compiled to a numba C callback (cached on disk next to its module)."""
    key = (function, str(signature))
    if key not in _COMPILED:
        _COMPILED[key] = numba.cfunc(signature, cache=True)(function)
    return _COMPILED[key]


def check_number(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """A finite real number within the bounds (not a bool, not a string), as a float, or a
    ValueError naming the hyper-parameter."""
    try:
        number = math.nan if isinstance(value, (bool, str, bytes)) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    bad = not math.isfinite(number)
    bad = bad or (low is not None and (number <= low if low_open else number < low))
    bad = bad or (high is not None and (number >= high if high_open else number > high))
    if bad:
        bounds = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
        bounds += "" if high is None else f"{' and' if bounds else ''} {'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name} must be a finite number{bounds}, got {value!r}")
    return number


class Rule:
    """Base of the learning rules; see the module docstring for what a subclass declares."""

    name = "rule"
    renormalise = True
    #: The largest w_boost the rule stays finite with (layers refuse more).
    max_w_boost = math.inf
    interacts = False
    plain_thresholds = True
    update = None
    batch_update = None
    #: The update ignores y, count and step: the kernels call it once, not at every firing.
    constant_update = False

    def params(self) -> tuple[float, ...]:
        """The numeric hyper-parameters, in the order ``update`` reads them."""
        return ()

    def settings(self) -> dict:
        """The hyper-parameters by name (for repr, equality and run records)."""
        return {}

    # What the layers and the engine ask of a rule.
    @property
    def linear(self) -> bool:
        """The update has the linear form ``c * w + d * x`` (the compiled solvers can run it)."""
        return type(self).update is not None

    @property
    def scans(self) -> bool:
        """Each neuron can be walked through a chunk on its own (the per-neuron solvers)."""
        return self.linear and self.plain_thresholds and not self.interacts

    @property
    def has_batch(self) -> bool:
        """Batch mode can run it: a combined linear move, or a move of its own."""
        return (self.linear and type(self).batch_update is not None) or \
            type(self).batch_move is not Rule.batch_move

    @property
    def modes(self) -> tuple[str, ...]:
        return ("reference", "sequential", "batch") if self.has_batch else ("reference", "sequential")

    def check_switches(self, *, k_winners, repulsion):
        """Refuse switches the rule cannot combine with (rules that pick their own learners)."""
        if self.interacts and (k_winners is not None or repulsion > 0):
            raise ValueError(f"rule {self.name!r} picks its own learners; k_winners and repulsion "
                             f"work with the Frontprop family ({', '.join(_family())})")

    def compiled_update(self):
        return compiled(type(self).update, UPDATE_SIGNATURE)

    def compiled_batch_update(self):
        return compiled(type(self).batch_update, BATCH_SIGNATURE)

    def params_array(self) -> np.ndarray:
        return np.ascontiguousarray(self.params(), dtype=np.float64).reshape(-1)

    # The reference.
    def step(self, weight, threshold, x, *, w_boost, count, step, k_winners=None, k_output=False,
             repulsion=0.0, repulsion_cosine=0.9):
        """One position: weight (N, K), threshold (N,) of this slot, x (K,) unit input, count (N,)
        learnings so far, step the global sample index. Returns new weight, new threshold, the
        output (N,) and which neurons learned (N,) bool. Every learner's move is computed from
        the weights at the start of the position."""
        y = weight @ x  # (N,)
        fired = y >= threshold
        candidates = fired.nonzero().flatten()
        order = torch.sort(y[candidates], descending=True, stable=True).indices  # ties: lower index first
        learners = candidates[order][:k_winners]  # (L,) all of them when k_winners is None
        params = torch.tensor(self.params(), dtype=torch.float64)
        c, d = type(self).update(y[learners], w_boost, count[learners].to(y.dtype), float(step), params)
        moved = column(c, weight) * weight[learners] + column(d, weight) * x  # (L, K)
        if repulsion > 0 and len(learners):
            moved = moved + torch.stack([repulsion_push(weight, int(j), repulsion, repulsion_cosine)
                                         for j in learners])
        new_weight, new_threshold = weight.clone(), threshold.clone()
        new_weight[learners] = moved / moved.norm(dim=1, keepdim=True) if self.renormalise else moved
        new_threshold[learners] = y[learners]
        learned = torch.zeros_like(fired)
        learned[learners] = True
        shown = learned if k_output else fired
        return new_weight, new_threshold, torch.where(shown, y, torch.zeros_like(y)), learned

    def end_step(self, threshold, *, t_decay, fired):
        """Once per step, after its positions: every threshold decays. threshold and fired (N, S)."""
        return threshold * (1.0 - t_decay)

    def batch_move(self, x, values, weight, *, w_boost, count, step):
        """Batch form of a rule that writes its own move (interacting rules): with the weights
        held over a chunk, move them once. x (P, K) the chunk's unit inputs at valid positions,
        values (P, N) their projections with the chunk-start weights; in place on weight (N, K)
        and count (N,) (learnings); step is the global index of the chunk's first sample."""
        raise NotImplementedError(f"rule {self.name!r} has no batch form")

    # Python object conventions.
    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v!r}"
                         for k, v in self.settings().items())

    def __repr__(self) -> str:
        extra = self.extra_repr()
        return f"{self.name}({extra})" if extra else self.name

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.settings() == self.settings()

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.settings().items())))


def column(value, like):
    """A coefficient (a number or an (L,) tensor) as a column over the rows of ``like``."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1, 1)


def repulsion_push(weight, j, repulsion, repulsion_cosine):
    """The repulsion switch for learner j: a step of length ``repulsion`` straight away from each
    other neuron whose weights have cosine > ``repulsion_cosine`` with its own. # (K,)"""
    push = torch.zeros_like(weight[j])
    for m in range(len(weight)):
        away = weight[j] - weight[m]
        cosine = weight[j] @ weight[m] / (weight[j].norm() * weight[m].norm())
        if m != j and cosine > repulsion_cosine and away.norm() > 0:
            push = push + repulsion * away / away.norm()
    return push


def _family() -> list[str]:
    from . import REGISTRY
    return [name for name, cls in REGISTRY.items() if not cls.interacts]
