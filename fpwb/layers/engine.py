"""A learning rule over a chunk of inputs: the reference walk, the exact sequential solvers and the
parallel batch update.

Both layers reduce their input to the same picture: a chunk of E steps (samples), each holding S
slots (FpLinear: one; FpConv2d: one per output location), each slot a unit vector of K values.
Every neuron has one threshold per slot. The stream order is step by step, slots in order inside a
step; the thresholds' end-of-step change (the decay) comes after each step's slots.

What a neuron does comes from the rule (``fpwb.rules``); the solvers here only use what the rule
declares:

- ``reference_chunk`` calls the rule's plain ``step`` at every position: any rule, any switch.
- The sequential solvers serve rules whose update has the linear form ``c * w + d * x`` with the
  plain threshold dynamics. With no interaction between neurons, a neuron's path through the
  chunk depends only on its own weights, thresholds and the inputs: one matmul gives every
  projection, then on CPU a compiled scan walks each neuron that fires somewhere on its own
  (``kernels.scan_gram`` / ``scan_direct``); on other devices the walk runs as *firing rounds*:
  in round k every neuron that still fires somewhere finds its next firing position at once,
  takes its update there, and recomputes its projections for the rest of the chunk. With
  k-winners-take-all or repulsion (neurons interact) the compiled walk goes position by position
  (``kernels.scan_positions``). Other rules run the reference walk.
- ``batch_chunk`` holds the weights at the chunk start and lets the thresholds run as in
  sequential mode, then moves each neuron once: the rule's combined linear move
  (``batch_update``) or its own (``batch_move``).
- A convolution's chunk on CPU (several locations, neurons that never interact) is one compiled
  call in either mode, in the convolution's (steps, kernels, locations) layout:
  ``sequential_conv`` (``kernels.scan_conv``) and ``batch_conv_chunk`` (``kernels.batch_conv``).
  Every chunk solver adds its firings to the layer's ``fire_count``.

Thresholds are compared in a scaled domain so that pure decay needs no work: a threshold t set
before step e0 has decayed to t * r**(e - e0) at step e (r = 1 - t_decay), so
``y >= t * r**(e - e0)``  <=>  ``y * r**-e >= t * r**-e0``. Each neuron keeps one scaled *level*
per slot, and a firing at step e sets it to ``y * r**-e``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..rules import Rule
from ..rules.base import column
from . import kernels
from .patches import Patches

# Scaled thresholds grow like r**-E over a chunk; keep that factor well inside float32 range.
MAX_SCALE = 1e6
#: A conv batch chunk (``batch_conv_chunk``) adds the learned patches to its kernels in a compiled
#: loop while at most this share of (location, kernel) pairs fired so far (from the layer's
#: counts), else sums them as one weight-gradient convolution (on the 2-core machine,
#: 64 -> 128 kernels 3x3 with 15% learned, the loop of ``kernels.batch_conv`` took 0.7x the time).
SPARSE_MOVE = 0.2
#: The same choice for a chunk whose neurons interact (k_winners), whose list kernel
#: (``kernels.batch_move_patches``) is slower per patch (measured crossover 5-10% there).
SPARSE_MOVE_LISTS = 0.05
#: The solvers each mode can be forced to (``layer.solver``; None picks by device, rule and cost).
SOLVERS = {"sequential": ("gram", "direct", "rounds", "reference"), "batch": ("compiled", "tensor")}


@dataclass(frozen=True)
class Learning:
    """What a learning forward needs besides the data and the state: the rule and its switches."""

    rule: Rule
    w_boost: float
    t_decay: float
    k_winners: int | None = None
    k_output: bool = False
    repulsion: float = 0.0
    repulsion_cosine: float = 0.9
    solver: str | None = None

    def winners(self, n_neurons: int):
        """k_winners, or None when every fired neuron is among the k most excited."""
        return None if self.k_winners is None or self.k_winners >= n_neurons else self.k_winners

    @property
    def compiled_rule(self):
        """The rule as the kernels take it: (update, params, renormalise, w_boost, constant)."""
        return (self.rule.compiled_update(), self.rule.params_array(), self.rule.renormalise, self.w_boost,
                self.rule.constant_update)

    @property
    def compiled_batch_rule(self):
        return (self.rule.compiled_batch_update(), self.rule.params_array(), self.rule.renormalise,
                self.w_boost, False)

    @property
    def quiet_until_fired(self) -> bool:
        """Nothing changes but the decay while no neuron fires (the silent lookahead may skip)."""
        return self.rule.plain_thresholds and not self.rule.interacts


def check_solver(mode: str, learning: Learning):
    """Refuse a forced solver that does not exist for the mode or cannot serve the rule/switches."""
    solver, rule = learning.solver, learning.rule
    if solver is None:
        return
    if solver not in SOLVERS[mode]:
        raise ValueError(f"solver for mode {mode!r} must be None or one of {SOLVERS[mode]}, got {solver!r}")
    interacting = learning.k_winners is not None or learning.repulsion > 0
    if mode == "sequential" and solver != "reference":
        if not rule.scans:
            raise ValueError(f"solver {solver!r} needs a rule with a linear update, plain thresholds "
                             f"and independent neurons; rule {rule!r} runs solver='reference'")
        if solver == "rounds" and interacting:
            raise ValueError("solver 'rounds' walks neurons one by one; with k_winners or repulsion "
                             "they interact: use 'gram', 'direct' or None")
    if mode == "batch" and solver == "compiled" and not rule.plain_thresholds:
        raise ValueError(f"solver 'compiled' walks the plain threshold dynamics; rule {rule!r} "
                         f"needs solver='tensor' or None")


def reads_patches_in_kernels(mode: str, learning: Learning, device) -> bool:
    """Whether a conv layer's learning chunks can take ``Patches`` (never written out): batch
    mode's compiled move on CPU, under a linear rule with plain thresholds and no repulsion, or
    sequential mode's ``kernels.scan_conv`` (no k_winners)."""
    if mode == "sequential":
        return scans_conv(learning, device) and learning.k_winners is None
    return mode == "batch" and learning.solver in (None, "compiled") and \
        writes_in_kernels(mode, learning, device)


def writes_in_kernels(mode: str, learning: Learning, device) -> bool:
    """Whether a chunk's weights are written only inside the compiled CPU kernels (after their
    allocations): then an error in the chunk comes before the weights change."""
    if device.type != "cpu" or learning.solver in ("rounds", "reference", "tensor"):
        return False
    rule = learning.rule
    if mode == "batch":
        return rule.linear and rule.plain_thresholds and learning.repulsion == 0
    return rule.scans


def max_steps(t_decay: float, requested: int) -> int:
    """Largest chunk length (in steps) whose decay scale r**-E stays below MAX_SCALE."""
    limit = math.log(MAX_SCALE) / -math.log1p(-t_decay) if t_decay < 1 else 1
    return max(1, min(requested, int(limit)))


def decay_scale(steps: int, r: float, like: torch.Tensor) -> torch.Tensor:
    """r**-e for e = 0..steps-1, in the dtype and device of ``like``.  # (E,)"""
    e = torch.arange(steps, device=like.device, dtype=like.dtype)
    return torch.exp(-e * math.log(r))


def gram_pays(P: int, A: int, K: int) -> bool:
    """Whether the Gram scan beats the direct one for P positions, A firing neurons, K inputs.

    Gram: P*P*K + A*P*K multiply-adds in BLAS (about ten times the speed of the compiled loops)
    plus up to A*P*P/2 simple updates in the scan; direct: A*P*K multiply-adds in the scan.
    Dividing both by P*K gives the test below.
    """
    return (P + A) / 10 + A * P / (8 * K) < A


def _stream(x, valid, step):
    """The kernels' (x, valid, slot, step) of a chunk x (E, S, K) starting at global step ``step``."""
    E, S, K = x.shape
    position = torch.arange(E * S)
    return (kernels.as_array(x.reshape(E * S, K)), kernels.as_array(valid.reshape(E * S)),
            position.remainder(S).numpy(), position.div(S, rounding_mode="floor").double().add_(step).numpy())


def sequential_chunk(x, valid, weight, threshold, count, out, *, learning: Learning, step: int, fire_count):
    """Run the exact per-position rule over one chunk, in place on ``weight``, ``threshold`` and
    ``count``.

    x: (E, S, K) unit rows (zero rows where ``valid`` is False), or ``Patches`` (a convolution
    on CPU whose walk reads them from the images); valid: (E, S) bool; weight: (N, K);
    threshold: (N, S); count: (N,) learnings per neuron; step: the global index of the chunk's
    first sample; out: (E, S, N) zeros, filled with the fired values (y where the neuron fired at
    that position, 0 elsewhere) and returned; fire_count (N,) grows by its non-zero entries.
    """
    rule, solver = learning.rule, learning.solver
    k_winners = learning.winners(weight.shape[0])
    if x.shape[1] > 1 and scans_conv(learning, x.device) and k_winners is None:
        return sequential_conv(x, valid, weight, threshold, count, out, learning=learning, step=step,
                               fire_count=fire_count)
    rows, pending = _buffer(out, conv=False, zeros=True)
    _sequential(x, valid, weight, threshold, count, rows, learning=learning, step=step, k_winners=k_winners)
    count_fired(rows, fire_count)
    return _copied_back(rows, pending, out)


def _buffer(out, *, conv: bool, zeros: bool):
    """Where a solver writes a chunk's output out (E, S, N): out itself (``conv``: viewed as
    (E, N, S)) when its memory is laid out so, else a new buffer of that layout (zeros or empty)
    with out's view to copy it into (:func:`_copied_back`). The layer's buffers are in a
    convolution's (E, N, S) layout for FpConv2d (``FpLayer._output_buffer``)."""
    view = out.transpose(1, 2) if conv else out
    if view.is_contiguous():
        return view, None
    return (view.new_zeros if zeros else view.new_empty)(view.shape), view


def _copied_back(written, pending, out):
    """out, after ``written`` went into its view ``pending`` (None: written is out's memory)."""
    if pending is not None:
        pending.copy_(written)
    return out


def scans_conv(learning: Learning, device) -> bool:
    """Whether a convolution's sequential chunk runs ``kernels.scan_conv`` (on CPU, no forced
    solver but 'direct', a rule each of whose neurons walks on its own, no repulsion; k_winners
    is checked by the caller, who knows the kernel count)."""
    return (device.type == "cpu" and learning.solver in (None, "direct") and learning.rule.scans
            and learning.repulsion == 0)


def _sequential(x, valid, weight, threshold, count, out, *, learning: Learning, step: int, k_winners):
    """``sequential_chunk`` on unit rows into a contiguous out: the solver the rule, switches and
    device call for."""
    rule, solver = learning.rule, learning.solver
    if solver == "reference" or not rule.scans:
        return reference_chunk(x, valid, weight, threshold, count, out, learning=learning, step=step)
    if k_winners is not None or learning.repulsion > 0:
        scan = solver if solver in ("gram", "direct") else "auto"
        fired, won = sequential_positions(x, valid, weight, threshold, count, learning=learning,
                                          step=step, scan=scan, k_winners=k_winners or 0)
        return out.copy_(fired * won if learning.k_output else fired)
    if solver == "rounds" or (solver is None and x.device.type != "cpu"):
        return sequential_rounds(x, valid, weight, threshold, count, out, learning=learning, step=step)
    return sequential_cpu(x, valid, weight, threshold, count, out, learning=learning, step=step,
                          scan=solver or "auto")


def single_position(x, weight, threshold, counters, *, learning: Learning,
                    normalize_output: bool) -> torch.Tensor | None:
    """A learning forward of one sample on CPU (a one-sample call, the way an online learner is
    fed) under a rule whose neurons do not interact (``single_position_serves``): every neuron
    that fires moves once. One compiled call (``kernels.single_step``, or ``single_step_threaded``
    with the rows split over threads: ``kernels.threads_for_short_calls``) scales x, reads each weight
    row once, projects, fires and moves it, and makes the whole state change, counters included,
    so that the call needs no chunk guard: it happens whole or not at all. x (K,) the raw input,
    weight (N, K), threshold (N,), counters (learn_count, fire_count, samples_seen: this
    sample's step); returns the finished output (N,), or None, with nothing changed, for an
    input whose length is zero or not an ordinary number (the general path's checks and
    scaling take those)."""
    rule = learning.rule
    x = kernels.as_array(x)
    if rule.constant_update:  # the same move for every neuron: the kernel scales x and projects
        unit, y = np.empty_like(x), np.empty(0, dtype=x.dtype)
        c, d = type(rule).update(0.0, learning.w_boost, 0.0, 0.0, ())
    else:  # the move depends on y: scale x and project here, then the rule's (c, d) per neuron
        length = math.sqrt(float(np.dot(x.astype(np.float64), x)))
        if not 2.0 ** -kernels.SAFE_EXPONENT <= length < math.inf:
            return None
        x = (x / x.dtype.type(length)).astype(x.dtype)
        unit, y = np.empty(0, dtype=x.dtype), weight.numpy() @ x  # (N,)
        c, d = type(rule).update(y.astype(np.float64), learning.w_boost,
                                 counters[0].numpy().astype(np.float64), float(counters[2]), rule.params_array())
    out = torch.zeros(weight.shape[0], dtype=weight.dtype)  # (N,)
    move = (np.ascontiguousarray(c, dtype=np.float64).reshape(-1),
            np.ascontiguousarray(d, dtype=np.float64).reshape(-1), rule.renormalise,
            1.0 - learning.t_decay, normalize_output)
    learn_count, fire_count, samples_seen = counters
    state = (x, unit, y, weight.numpy(), threshold.numpy(), move,
             (learn_count.numpy(), fire_count.numpy(), samples_seen.numpy().reshape(1)), out.numpy())
    kernels.match_threads()
    threads = kernels.threads_for_short_calls()
    status = kernels.single_step_threaded(*state, threads) if threads > 1 else kernels.single_step(*state)
    return out if status == 0 else None


def single_position_serves(learning: Learning, mode: str, x: torch.Tensor, n_neurons: int) -> bool:
    """Whether :func:`single_position` runs a call of one position: CPU, sequential mode, no forced
    solver, a renormalising rule each of whose neurons walks on its own, no interacting switch."""
    return (mode == "sequential" and x.device.type == "cpu" and learning.solver is None
            and learning.rule.scans and learning.rule.renormalise  # (others can diverge: the general path undoes that)
            and learning.winners(n_neurons) is None and learning.repulsion == 0)


def reference_chunk(x, valid, weight, threshold, count, out, *, learning: Learning, step: int):
    """The rule's plain ``step`` at every valid position, then its ``end_step`` after each step:
    slow, obvious, any rule and switch. Shapes as in :func:`sequential_chunk`."""
    rule = learning.rule
    E, S, _ = x.shape
    switches = dict(k_winners=learning.winners(weight.shape[0]), k_output=learning.k_output,
                    repulsion=learning.repulsion, repulsion_cosine=learning.repulsion_cosine)
    for e in range(E):
        fired = torch.zeros_like(threshold, dtype=torch.bool)  # (N, S) fired during this step
        for s in range(S):
            if not bool(valid[e, s]):
                continue
            new_weight, new_threshold, output, learned = rule.step(
                weight, threshold[:, s], x[e, s], w_boost=learning.w_boost, count=count,
                step=step + e, **switches)
            weight.copy_(new_weight)
            threshold[:, s] = new_threshold
            out[e, s] = output
            count += learned
            fired[:, s] = output != 0
        threshold.copy_(rule.end_step(threshold, t_decay=learning.t_decay, fired=fired))
    return out


def scaled_projections(x, valid, weight, threshold, r):
    """One matmul for the whole chunk: scaled projections and which neurons fire anywhere.

    Returns flat x (P, K), the decay scale r**-e per position (P,), u = (w . x) * scale (N, P) and
    a mask of the neurons whose projection reaches their threshold at some valid position (N,).
    """
    E, S, K = x.shape
    scale = decay_scale(E, r, x).repeat_interleave(S)  # (P,)
    flat_x = x.reshape(E * S, K)
    u = (weight @ flat_x.T).mul_(scale)  # (N, P)
    if S == 1 and bool(valid.all()):  # one slot, every position valid: one reduction
        fires = u.amax(1) >= threshold[:, 0]
    else:
        fires = ((u.view(-1, E, S) >= threshold.unsqueeze(1)) & valid).flatten(1).any(1)
    return flat_x, scale, u, fires


def projections(x, weight) -> torch.Tensor:
    """Every position's projection on every neuron: x (E, S, K) unit rows or ``Patches``, weight
    (N, K); returns (E, S, N)."""
    if isinstance(x, Patches):
        return x.project(weight)
    E, S, K = x.shape
    return (x.reshape(E * S, K) @ weight.T).view(E, S, -1)


def rows(x) -> torch.Tensor:
    """x as (E, S, K) unit rows (``Patches`` written out)."""
    return x.rows() if isinstance(x, Patches) else x


def solver_input(x):
    """x (E, S, K) as the solvers take it: ``Patches`` made ``as_rows`` written out, the rest as
    it is. Called on a chunk (or a look-ahead span), so that only its rows exist at once."""
    return x.rows() if isinstance(x, Patches) and x.as_rows else x


def silent_steps(x, valid, weight, threshold, t_decay) -> int:
    """How many leading steps of x (E, S, K) (or ``Patches``) fire no neuron from the current state
    (E when none does). Over those steps a rule with plain thresholds that learns only where
    neurons fire (``Learning.quiet_until_fired``) only decays its thresholds, in either mode."""
    E, S = x.shape[:2]
    u = projections(x, weight).mul_(decay_scale(E, 1.0 - t_decay, weight).view(E, 1, 1))  # (E, S, N)
    if S == 1 and bool(valid.all()) and not bool((u.view(E, -1).amax(0) >= threshold[:, 0]).any()):
        return E  # one slot, nothing fires: one reduction
    reached = (u >= threshold.T) & valid.unsqueeze(-1)  # (E, S, N)
    steps = reached.flatten(1).any(1)  # (E,)
    return int(steps.to(torch.uint8).argmax()) if bool(steps.any()) else E


def sequential_positions(x, valid, weight, threshold, count, *, learning: Learning, step: int,
                         scan="auto", k_winners=0):
    """Exact rule with interacting neurons, position by position (``kernels.scan_positions``).

    Shapes as in :func:`sequential_chunk`; returns (fired values, learned) both (E, S, N).
    """
    device = x.device
    if device.type != "cpu":
        state = weight.cpu(), threshold.cpu(), count.cpu()
        out, won = sequential_positions(x.cpu(), valid.cpu(), *state, learning=learning, step=step,
                                        scan=scan, k_winners=k_winners)
        for target, source in zip((weight, threshold, count), state):
            target.copy_(source)
        return out.to(device), won.to(device)
    E, S, K = x.shape
    N = weight.shape[0]
    P = E * S
    r = 1.0 - learning.t_decay
    flat_x, scale, u, active = scaled_projections(x, valid, weight, threshold, r)
    out = x.new_zeros(N, P)
    won = torch.zeros(N, P, dtype=torch.bool)
    A = int(active.sum())
    if A:
        use_gram = scan == "gram" or (scan == "auto" and gram_pays(P, A, K))
        gram = (flat_x @ flat_x.T) * scale if use_gram else x.new_zeros(1, 1)
        w = weight.contiguous().clone()
        level = threshold.contiguous().clone()
        kernels.scan_positions(u.contiguous().numpy(), gram.numpy(), scale.numpy(),
                               _stream(x, valid, step), active.numpy(),
                               (w.numpy(), level.numpy(), count.numpy()), learning.compiled_rule,
                               (k_winners, learning.repulsion, learning.repulsion_cosine, use_gram),
                               out.numpy(), won.numpy())
        weight.copy_(w)
        threshold.copy_(level)
    threshold.mul_(r ** E)
    return out.T.reshape(E, S, N), won.T.reshape(E, S, N)


def sequential_cpu(x, valid, weight, threshold, count, out, *, learning: Learning, step: int, scan="auto"):
    """CPU solver: one matmul for all projections, then compiled per-neuron scans that update the
    state in place and write the fired values straight into the output."""
    E, S, K = x.shape
    P = E * S
    r = 1.0 - learning.t_decay
    flat_x, scale, u, fires = scaled_projections(x, valid, weight, threshold, r)
    fired = out.view(P, -1)  # (P, N)
    neurons = fires.nonzero().squeeze(1)  # (A,) neurons that fire somewhere in the chunk
    if neurons.numel():
        kernels.match_threads()
        stream = _stream(x, valid, step)
        state = (weight.numpy(), threshold.numpy(), count.numpy())
        if scan == "gram" or (scan == "auto" and gram_pays(P, neurons.numel(), K)):
            gram = (flat_x @ flat_x.T) * scale  # (P, P)
            kernels.scan_gram(u.numpy(), gram.numpy(), (1.0 / scale).numpy(), stream, neurons.numpy(),
                              state, learning.compiled_rule, fired.numpy())
        else:
            kernels.scan_direct(u.numpy(), scale.numpy(), stream, neurons.numpy(), state,
                                learning.compiled_rule, fired.numpy())
    threshold.mul_(r ** E)
    return out


def sequential_rounds(x, valid, weight, threshold, count, out, *, learning: Learning, step: int):
    """Device-generic solver: firing rounds vectorised over neurons (see the module docstring)."""
    rule = learning.rule
    E, S, K = x.shape
    N = weight.shape[0]
    r = 1.0 - learning.t_decay
    scale = decay_scale(E, r, x)  # (E,)
    flat_x = x.reshape(E * S, K)  # (P, K), position p = e * S + s
    fired_values = out.view(E * S, N)

    projections = flat_x @ weight.T  # (P, N)
    scaled = projections.view(E, S, N) * scale.view(E, 1, 1)
    scaled.masked_fill_(~valid.unsqueeze(-1), -math.inf)
    level = threshold.T.contiguous()  # (S, N) scaled levels, start of chunk = raw thresholds
    fires = (scaled >= level).view(E * S, N)  # (P, N)
    any_fire = fires.any(0)  # (N,)
    if not bool(any_fire.any()):
        threshold.mul_(r ** E)
        return out

    params = torch.tensor(rule.params(), dtype=x.dtype, device=x.device)
    idx = any_fire.nonzero().squeeze(1)  # (A,) neurons that fire at least once
    w = weight[idx]  # (A, K)
    lev = level[:, idx]  # (S, A)
    learned = count[idx].clone()  # (A,)
    fires = fires[:, idx]  # (P, A)
    values = projections[:, idx]  # (P, A)
    position = torch.arange(E * S, device=x.device)
    step_scale = scale.repeat_interleave(S)  # (P,)
    slot = position % S  # (P,)
    step_of = position.div(S, rounding_mode="floor").to(x.dtype) + step  # (P,)
    cols = torch.arange(idx.numel(), device=x.device)
    valid_flat = valid.reshape(E * S, 1)
    while True:
        first = fires.to(torch.uint8).argmax(0)  # (A,) first firing position of each neuron
        y = values[first, cols]  # (A,)
        fired_values[first, idx] = y
        c, d = type(rule).update(y, learning.w_boost, learned.to(x.dtype), step_of[first], params)
        w = column(c, w) * w + column(d, w) * flat_x[first]
        if rule.renormalise:
            w = w / w.norm(dim=1, keepdim=True)
        learned += 1
        lev[slot[first], cols] = y * step_scale[first]
        # Only positions after each neuron's latest firing can fire it next.
        later = position.unsqueeze(1) > first  # (P, A)
        values = flat_x @ w.T  # (P, A)
        scaled = values * step_scale.unsqueeze(1)
        fires = (scaled.view(E, S, -1) >= lev).view(E * S, -1) & later & valid_flat
        still = fires.any(0)  # (A,)
        if not bool(still.all()):
            done = ~still
            weight[idx[done]] = w[done]
            threshold[idx[done]] = lev[:, done].T
            count[idx[done]] = learned[done]
            if not bool(still.any()):
                break
            idx, w, lev, fires, values, learned = (idx[still], w[still], lev[:, still], fires[:, still],
                                                   values[:, still], learned[still])
            cols = torch.arange(idx.numel(), device=x.device)
    threshold.mul_(r ** E)
    return out


def top_k_mask(values, fired, k):
    """Which fired neurons are among the k most excited at each position: values and fired
    (..., N); returns a bool mask (..., N). ``k`` None: every fired neuron."""
    if k is None or k >= values.shape[-1]:
        return fired
    masked = values.masked_fill(~fired, -math.inf)
    top = masked.topk(k, dim=-1).indices
    return torch.zeros_like(fired).scatter_(-1, top, True) & fired


def batch_chunk(x, valid, weight, threshold, count, out, *, learning: Learning, step: int, fire_count):
    """The parallel mini-batch variant, in place on ``weight``, ``threshold`` and ``count``.

    Every position sees the weights of the chunk start; the thresholds follow the stream exactly
    as in sequential mode (a learner's threshold at that slot becomes y; the end-of-step change
    after every step). So a neuron fires where its chunk-start projection reaches the running
    level. This is sequential mode with the weight updates held to the chunk end, where each
    neuron moves once: the rule's ``batch_update`` combines the moves of a neuron that learned at
    several positions (the plain rule: one move toward the mean of those inputs, worth that many
    sequential steps), or the rule's own ``batch_move`` moves every neuron (interacting rules).
    Shapes and ``out`` as in :func:`sequential_chunk`; fire_count (N,) grows by the chunk's
    non-zero firings.

    Switches: ``k_winners``: at each position only the k most excited fired neurons learn (their
    firings move the weights and their thresholds; ``k_output``: only they output).
    ``repulsion``: each learning neuron adds ``repulsion * (w - w_m) / |w - w_m|`` once per chunk
    for each neuron m whose chunk-start weights have cosine > ``repulsion_cosine`` with its own.

    Solvers: "compiled" (CPU) walks the positions in ``kernels.batch_walk`` and moves the weights
    with ``kernels.batch_move``, touching only the firings; "tensor" (the default on other
    devices) finds the firings of the plain dynamics from a running maximum over the chunk and
    moves the weights with matmuls (with ``k_winners`` neurons interact: the walk runs on CPU).
    Rules with their own threshold dynamics walk the steps with tensors.
    """
    rule = learning.rule
    E, S, K = x.shape
    N = weight.shape[0]
    P = E * S
    r = 1.0 - learning.t_decay
    k_winners = learning.winners(N)
    solver = learning.solver or ("compiled" if x.device.type == "cpu" else "tensor")
    if S > 1 and solver == "compiled" and k_winners is None and writes_in_kernels("batch", learning, x.device):
        return batch_conv_chunk(x, valid, weight, threshold, count, out, learning=learning, step=step,
                                fire_count=fire_count)
    final, (out, pending) = out, _buffer(out, conv=False, zeros=False)
    scale = decay_scale(E, r, weight)  # (E,)
    values = projections(x, weight).reshape(P, N)  # (P, N)
    if not rule.plain_thresholds:
        learn = threshold_walk(values.view(E, S, N), valid, threshold, out, learning=learning, k_winners=k_winners)
    elif solver == "tensor" and k_winners is None:
        scaled = (values.view(E, S, N) * scale.view(E, 1, 1)).masked_fill_(~valid.unsqueeze(-1), -math.inf)
        running = scaled.cummax(0).values  # (E, S, N) highest scaled value up to each step
        before = torch.cat([torch.full_like(running[:1], -math.inf), running[:-1]])
        learn = (scaled >= torch.maximum(before, threshold.T)).view(P, N)
        torch.mul(values, learn, out=out.view(P, N))
        threshold.copy_(torch.maximum(threshold, running[-1].T))
    else:
        learn = batch_firings(values, scale, valid.reshape(P), S, threshold, k_winners or 0,
                              learning.k_output, out.view(P, N))
    if not rule.linear:
        keep = valid.reshape(P)
        rule.batch_move(rows(x).reshape(P, K)[keep], values[keep], weight, w_boost=learning.w_boost,
                        count=count, step=step)
    elif solver == "compiled" and learning.repulsion == 0 and x.device.type == "cpu":
        kernels.match_threads()
        move = (kernels.learned_lists(learn.numpy(), kernels.threads()), kernels.as_array(values))
        state = (weight.numpy(), count.numpy(), float(step), learning.compiled_batch_rule)
        if not isinstance(x, Patches):
            kernels.batch_move(*move, kernels.as_array(x.reshape(P, K)), *state)
        elif int(learn.sum()) <= SPARSE_MOVE_LISTS * P * N:  # each learned patch read from the images
            kernels.batch_move_patches(*move, x.kernel_source(), *state)
        else:  # dense: one weight-gradient convolution beats a compiled loop per learned patch
            batch_move(x, learn, values, weight, count, learning=learning, step=step)
    else:
        batch_move(x if isinstance(x, Patches) else x.reshape(P, K), learn, values, weight, count,
                   learning=learning, step=step)
    if rule.plain_thresholds:
        threshold.mul_(r ** E)
    count_fired(out, fire_count)
    return _copied_back(out, pending, final)


def count_fired(out, fire_count):
    """fire_count (N,) += the non-zero entries of out (..., N) per neuron (one compiled pass on CPU)."""
    flat = out.reshape(-1, out.shape[-1])  # (E * S, N)
    if flat.device.type == "cpu":
        kernels.count_fired(flat.numpy(), fire_count.numpy())
    else:
        fire_count += (flat != 0).sum(0).to(fire_count)


def batch_conv_chunk(x, valid, weight, threshold, count, out, *, learning: Learning, step: int, fire_count):
    """``batch_chunk`` of a convolution (S > 1 locations) on CPU under a linear rule with plain
    thresholds, no k_winners and no repulsion, in one compiled call (``kernels.batch_conv``) that
    reads the projections in the convolution's (E, N, S) layout, writes the output in the layer's
    (the same), and touches only the learnings after its walk: the learned patches are added
    there while at most ``SPARSE_MOVE`` of the (location, kernel) pairs learned (``Patches`` read
    from the images, channels-last, with the kernels moved in that order), else as one
    weight-gradient convolution. x: unit rows (E, S, K) or ``Patches``; fire_count (N,) grows."""
    E, S, K = x.shape
    N = weight.shape[0]
    r = 1.0 - learning.t_decay
    lazy = isinstance(x, Patches)
    # Dense learning: one weight-gradient convolution beats adding each learned patch. The share
    # of learned pairs so far (state, not this chunk: a restored layer chooses as the original).
    dense = lazy and step > 0 and float(fire_count.sum()) > SPARSE_MOVE * step * S * N
    raw, denominator, source, moved = _conv_source(x, weight, reads_patches=not dense)
    written, pending = _buffer(out, conv=True, zeros=False)  # (E, N, S)
    before = count.clone() if dense else None
    kernels.match_threads()
    kernels.batch_conv(kernels.as_array(raw), kernels.as_array(denominator), kernels.as_array(valid),
                       decay_scale(E, r, weight).numpy(), threshold.numpy(), written.numpy(), source,
                       moved.numpy(), count.numpy(), fire_count.numpy(), float(step), learning.compiled_batch_rule,
                       raw.numpy() if dense else np.empty((0, 0, 0), dtype=raw.numpy().dtype), kernels.threads())
    _copied_back(written, pending, out)
    if dense:  # raw now holds the coefficients of the learned patches
        images = x.images
        weight.add_(torch.nn.grad.conv2d_weight(images, (N, images.shape[1], *x.kernel_size),
                                                raw.view(E, N, *x.out_size), stride=x.stride).view(N, K))
        learners = count > before
        if learning.rule.renormalise and bool(learners.any()):
            weight[learners] = weight[learners] / weight[learners].norm(dim=1, keepdim=True)
    _written_back(x, weight, moved)
    threshold.mul_(r ** E)
    return out


def _conv_source(x, weight, *, reads_patches=True):
    """What the conv kernels read for the patches of x (unit rows (E, S, K) or ``Patches``) and
    the weights they move: (raw projections (E, N, S), patch lengths (E, S), source, moved
    (N, K)); for ``Patches`` moved is a copy of weight in channels-last (kH, kW, C) order, to be
    written back with :func:`_written_back`. ``reads_patches`` False: the kernel reads no patch
    (batch mode's dense move sums them outside), so source is empty and moved is weight."""
    E, S, K = x.shape
    N = weight.shape[0]
    dtype = kernels.as_array(weight).dtype
    no_rows, no_images = np.empty((0, K), dtype=dtype), np.empty((0, 1, 1), dtype=dtype)
    geometry = np.zeros(6, dtype=np.int64)
    if isinstance(x, Patches) and not reads_patches:
        return x.raw_projections(weight), x.denominator(), (no_rows, no_images, geometry), weight
    if isinstance(x, Patches):
        C, (kh, kw) = x.channels, x.kernel_size
        moved = weight.view(N, C, kh, kw).permute(0, 2, 3, 1).contiguous().view(N, K)  # (N, kH * kW * C)
        geometry[:] = (x.out_size[1], kh, kw, *x.stride, C)
        return x.raw_projections(weight), x.denominator(), (no_rows, x.channels_last().numpy(), geometry), moved
    raw = torch.matmul(weight, x.transpose(1, 2))  # (E, N, S)
    return raw, x.new_ones(E, S), (kernels.as_array(x.reshape(E * S, K)), no_images, geometry), weight


def _written_back(x, weight, moved):
    """weight (N, K) from the kernels' channels-last copy ``moved`` (see :func:`_conv_source`)."""
    if moved is not weight:
        N, K = weight.shape
        C, (kh, kw) = x.channels, x.kernel_size
        weight.copy_(moved.view(N, kh, kw, C).permute(0, 3, 1, 2).reshape(N, K))


def sequential_conv(x, valid, weight, threshold, count, out, *, learning: Learning, step: int, fire_count):
    """``sequential_chunk`` of a convolution (S > 1 locations) on CPU under a rule whose neurons
    never interact: one compiled walk (``kernels.scan_conv``) in the convolution's (E, N, S)
    layout, reading moved kernels' projections as dot products with the patches (from the
    images for ``Patches``)."""
    E = x.shape[0]
    r = 1.0 - learning.t_decay
    raw, denominator, source, moved = _conv_source(x, weight)
    written, pending = _buffer(out, conv=True, zeros=True)  # (E, N, S)
    kernels.match_threads()
    kernels.scan_conv(kernels.as_array(raw), kernels.as_array(denominator), kernels.as_array(valid),
                      decay_scale(E, r, weight).numpy(), threshold.numpy(), written.numpy(), source,
                      moved.numpy(), count.numpy(), fire_count.numpy(), float(step), learning.compiled_rule,
                      kernels.threads())
    _copied_back(written, pending, out)
    _written_back(x, weight, moved)
    threshold.mul_(r ** E)
    return out


def threshold_walk(values, valid, threshold, out, *, learning: Learning, k_winners):
    """Firing decisions of a batch chunk under a rule's own threshold dynamics, step by step with
    tensors (vectorised over slots and neurons): values (E, S, N) with the chunk-start weights,
    valid (E, S); in place: threshold (N, S) and out (E, S, N). Returns where each neuron learned,
    (E * S, N) bool."""
    E, S, N = values.shape
    learn = torch.zeros(E, S, N, dtype=torch.bool, device=values.device)
    for e in range(E):
        v = values[e]  # (S, N)
        fired = (v >= threshold.T) & valid[e].unsqueeze(1)
        learn[e] = top_k_mask(v, fired, k_winners)
        threshold.copy_(torch.where(learn[e].T, v.T, threshold))
        shown = learn[e] if learning.k_output else fired
        out[e] = v * shown
        threshold.copy_(learning.rule.end_step(threshold, t_decay=learning.t_decay, fired=shown.T))
    return learn.view(E * S, N)


def batch_firings(values, scale, valid, n_slots, threshold, k_winners, k_output, out):
    """Run ``kernels.batch_walk`` (on CPU; other devices copy there and back). Flat shapes:
    values and out (P, N) (out: every entry written, fired values or 0), valid (P,), position
    p = e * n_slots + s, scale (E,) of each step; threshold (N, S) becomes the chunk-end level.
    Returns where each neuron learned, (P, N) bool."""
    cpu = values.device.type == "cpu"
    level = threshold if cpu else threshold.cpu()  # the walk updates it in place
    fired = out if cpu else torch.empty(out.shape, dtype=out.dtype)
    learn = torch.empty(values.shape, dtype=torch.bool)
    kernels.match_threads()
    kernels.batch_walk(kernels.as_array(values.cpu()), kernels.as_array(scale.cpu()),
                       kernels.as_array(valid.cpu()), n_slots, level.numpy(),
                       k_winners, k_output, fired.numpy(), learn.numpy(), kernels.threads())
    if not cpu:
        threshold.copy_(level)
        out.copy_(fired)
    return learn.to(values.device)


def batch_move(x, learn, values, weight, count, *, learning: Learning, step: int):
    """The batch weight update with tensors (any device, any switch): the rule's combined move as
    dense coefficients (``kernels.batch_coefficients``, on CPU), then matmuls. x (P, K) unit rows
    or ``Patches`` (then the inputs' weighted sum is a convolution's weight gradient); learn and
    values (P, N); in place on weight (N, K) and count (N,)."""
    learners = learn.any(0)  # (N,)
    if not bool(learners.any()):
        return
    keep = torch.empty(weight.shape[0], dtype=torch.float64)
    coef = torch.zeros(learn.shape, dtype=torch.float64)  # (P, N)
    counts = count.cpu()
    lists = kernels.learned_lists(kernels.as_array(learn.cpu()), kernels.threads())
    kernels.batch_coefficients(lists, kernels.as_array(values.cpu()),
                               counts.numpy(), float(step), learning.compiled_batch_rule,
                               keep.numpy(), coef.numpy())
    count.copy_(counts)
    keep, coef = keep.to(weight)[learners], coef.to(weight)[:, learners]
    if isinstance(x, Patches):
        E, S, K = x.shape
        grad = (coef * x.inverse_norm().to(coef).view(E * S, 1)).view(E, S, -1).transpose(1, 2)  # (E, L, S)
        images = x.images
        summed = torch.nn.grad.conv2d_weight(images, (grad.shape[1], images.shape[1], *x.kernel_size),
                                             grad.reshape(E, -1, *x.out_size), stride=x.stride)
        summed = summed.reshape(-1, K)  # (L, K)
    else:
        summed = coef.T @ x  # (L, K)
    w = keep.unsqueeze(1) * weight[learners] + summed  # (L, K)
    if learning.repulsion > 0:
        norms = weight.norm(dim=1)
        dots = weight[learners] @ weight.T  # (L, N)
        close = dots > learning.repulsion_cosine * norms[learners].unsqueeze(1) * norms
        close[torch.arange(len(w)), learners.nonzero().squeeze(1)] = False
        dist = (norms[learners].unsqueeze(1) ** 2 + norms ** 2 - 2 * dots).clamp_min(0).sqrt()
        push = torch.where(close & (dist > 0), learning.repulsion / dist.clamp_min(1e-30), dist.new_zeros(()))
        w = w + push.sum(1, keepdim=True) * weight[learners] - push @ weight
    weight[learners] = w / w.norm(dim=1, keepdim=True) if learning.rule.renormalise else w
